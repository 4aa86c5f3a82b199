"""The `batches:` section of rules.yaml: how the proxy's Files and Batch APIs behave.

    batches:
      store: sqlite                    # sqlite (confdir), sqlite:///<path>, redis://...
      max_file_bytes: 536870912        # an upload larger than this is refused (413)
      max_lines: 50000                 # lines per batch input file (OpenAI's limit)
      concurrency: 8                   # lines of all batches in flight at once
      requests_per_minute: null        # lines started per minute; null: unbounded
      encryption_key_env: null         # env var with Fernet key(s): files encrypted at rest
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bastion_edge.config.reader import Path_, Reader
from bastion_edge.config.store_url import read_store


@dataclass(frozen=True, slots=True)
class BatchRules:
    store: str = "sqlite"
    max_file_bytes: int = 512 * 1024 * 1024
    max_lines: int = 50_000
    concurrency: int = 8
    requests_per_minute: int | None = None
    encryption_key_env: str | None = None


def read_batches(reader: Reader, value: object, path: Path_) -> BatchRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, ("store", "max_file_bytes", "max_lines", "concurrency",
                                     "requests_per_minute", "encryption_key_env"))
    rules = BatchRules()
    if "store" in section:
        rules = replace(rules, store=read_store(reader, section["store"], (*path, "store")))
    if "max_file_bytes" in section:
        rules = replace(rules, max_file_bytes=reader.positive_integer(
            section["max_file_bytes"], (*path, "max_file_bytes")))
    if "max_lines" in section:
        rules = replace(rules, max_lines=reader.positive_integer(
            section["max_lines"], (*path, "max_lines")))
    if "concurrency" in section:
        rules = replace(rules, concurrency=reader.positive_integer(
            section["concurrency"], (*path, "concurrency")))
    if section.get("requests_per_minute") is not None:
        rules = replace(rules, requests_per_minute=reader.positive_integer(
            section["requests_per_minute"], (*path, "requests_per_minute")))
    if section.get("encryption_key_env") is not None:
        rules = replace(rules, encryption_key_env=reader.env_name(
            section["encryption_key_env"], (*path, "encryption_key_env")))
    return rules
