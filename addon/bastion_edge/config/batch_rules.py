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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

BATCH_STORE_FORMS = "sqlite, sqlite:///<absolute path> or a redis:// (rediss://) URL"


@dataclass(frozen=True, slots=True)
class BatchRules:
    store: str = "sqlite"
    max_file_bytes: int = 512 * 1024 * 1024
    max_lines: int = 50_000
    concurrency: int = 8
    requests_per_minute: int | None = None
    encryption_key_env: str | None = None


class _Parser(Protocol):
    def mapping(self, value: object, path: tuple[str | int, ...]) -> Mapping[str, Any]: ...

    def only_keys(self, value: Mapping[str, Any], path: tuple[str | int, ...],
                  allowed: Sequence[str]) -> None: ...

    def string(self, value: object, path: tuple[str | int, ...], what: str = ...) -> str: ...

    def positive_integer(self, value: object, path: tuple[str | int, ...]) -> int: ...

    def env_name(self, value: object, path: tuple[str | int, ...]) -> str: ...

    def fail(self, path: tuple[str | int, ...], message: str) -> Exception: ...


def parse_batches(parser: _Parser, value: object, path: tuple[str | int, ...]) -> BatchRules:
    section = parser.mapping(value, path)
    parser.only_keys(section, path, ("store", "max_file_bytes", "max_lines", "concurrency",
                                     "requests_per_minute", "encryption_key_env"))
    rules = BatchRules()
    if "store" in section:
        store = parser.string(section["store"], (*path, "store"), BATCH_STORE_FORMS)
        if store != "sqlite" and not store.startswith(("sqlite:///", "redis://", "rediss://")):
            raise parser.fail((*path, "store"), f"expected {BATCH_STORE_FORMS}")
        rules = replace(rules, store=store)
    if "max_file_bytes" in section:
        rules = replace(rules, max_file_bytes=parser.positive_integer(
            section["max_file_bytes"], (*path, "max_file_bytes")))
    if "max_lines" in section:
        rules = replace(rules, max_lines=parser.positive_integer(
            section["max_lines"], (*path, "max_lines")))
    if "concurrency" in section:
        rules = replace(rules, concurrency=parser.positive_integer(
            section["concurrency"], (*path, "concurrency")))
    if section.get("requests_per_minute") is not None:
        rules = replace(rules, requests_per_minute=parser.positive_integer(
            section["requests_per_minute"], (*path, "requests_per_minute")))
    if section.get("encryption_key_env") is not None:
        rules = replace(rules, encryption_key_env=parser.env_name(
            section["encryption_key_env"], (*path, "encryption_key_env")))
    return rules
