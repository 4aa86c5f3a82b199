"""Keys from files, re-read on change (Kubernetes Secret symlink swaps included)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bastion_edge.config.key_files import KeyFiles
from bastion_edge.config.rules import parse_rules
from bastion_edge.core.facts import CHAT, RequestFacts
from bastion_edge.core.keys import KeyChoice, key_source, select_key
from bastion_edge.errors import ApiError

DIGEST = hashlib.sha256(b"x").hexdigest()


def secret_volume(root: Path, key: str) -> Path:
    """A Secret mount as the kubelet writes it: key -> ..data/key, ..data -> ..<stamp>."""
    return swap_secret(root, key, "..2026_01")


def swap_secret(root: Path, key: str, stamp: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / stamp).mkdir()
    (root / stamp / "key").write_text(key)
    (root / "..data_tmp").symlink_to(stamp)
    os.replace(root / "..data_tmp", root / "..data")  # the atomic swap
    if not (root / "key").is_symlink():
        (root / "key").symlink_to("..data/key")
    return root / "key"


def test_reads_strips_and_follows_a_secret_swap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    files = KeyFiles(registry)
    path = secret_volume(tmp_path / "secret", "  bk-old\n")
    assert files.read(str(path)) == "bk-old"
    swap_secret(tmp_path / "secret", "bk-new\n", "..2026_02")
    assert files.read(str(path)) == "bk-old"  # from memory until the next poll
    with caplog.at_level(logging.INFO):
        files.poll()
    assert files.read(str(path)) == "bk-new"
    exported = generate_latest(registry).decode()
    assert f'result="changed",source="file:{path}"}} 1.0' in exported
    assert "bk-new" not in exported and "bk-new" not in caplog.text
    assert str(path) in caplog.text


def test_a_broken_file_keeps_the_last_key_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    files = KeyFiles(registry)
    path = tmp_path / "key"
    path.write_text("bk-1")
    assert files.read(str(path)) == "bk-1"
    path.write_text("  \n")
    files.poll()
    path.unlink()
    files.poll()
    assert files.read(str(path)) == "bk-1"
    assert f'result="failed",source="file:{path}"}} 1.0' in generate_latest(registry).decode()
    assert "bk-1" not in caplog.text
    path.write_text("bk-2")
    files.poll()
    assert files.read(str(path)) == "bk-2"


def test_a_file_never_readable_gives_no_key(tmp_path: Path) -> None:
    assert KeyFiles().read(str(tmp_path / "missing")) is None


RULES = parse_rules(f"""
keys:
  default_file: /keys/default
  select:
    - {{when: {{app: reports}}, env: KEY_REPORTS}}
    - {{when: {{endpoint: embeddings}}, env: KEY_EMBED}}
clients:
  apps:
    - {{name: billing, secret_sha256: "{DIGEST}", bastion_key_file: /keys/billing}}
    - {{name: ledger, secret_sha256: "{DIGEST}", bastion_key_env: KEY_LEDGER}}
    - {{name: reports, secret_sha256: "{DIGEST}"}}
""")


def test_key_source_order() -> None:
    assert key_source(RULES, RequestFacts(CHAT, app="billing")) == "file:/keys/billing"
    assert key_source(RULES, RequestFacts("embeddings", app="ledger")) == "KEY_LEDGER"
    assert key_source(RULES, RequestFacts(CHAT, app="reports")) == "KEY_REPORTS"
    assert key_source(RULES, RequestFacts("embeddings")) == "KEY_EMBED"
    assert key_source(RULES, RequestFacts(CHAT)) == "file:/keys/default"
    assert key_source(parse_rules(""), RequestFacts(CHAT)) == "QUBITTRON_API_KEY"


class Files:
    def read(self, path: str) -> str | None:
        return {"/keys/billing": "bk-billing"}.get(path)


def test_select_key_reads_files_and_fails_closed_naming_the_file() -> None:
    choice = select_key(RULES, RequestFacts(CHAT, app="billing"), {}, Files())
    assert choice == KeyChoice("file:/keys/billing", "bk-billing")
    with pytest.raises(ApiError) as e:
        select_key(RULES, RequestFacts(CHAT), {}, Files())
    assert e.value.status == 401 and "/keys/default" in e.value.message
