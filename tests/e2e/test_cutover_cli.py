"""`bastion-edge cutover ...` on a real store: status shows step, gates and next
decision; hand events move the state every proxy shares, and it stays moved."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import BASTION_EDGE

pytestmark = pytest.mark.e2e

RULES = """
cutover:
  mode: canary
  canary:
    steps: [1, 5, 25, 50, 100]
    min_requests: 200
    min_seconds: 1800
    gates: {max_error_rate_increase_pp: 1, max_p95_ratio: 1.5, min_agreement: 0.9}
    on_fail: rollback
"""


def cutover(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BASTION_EDGE), "cutover", *args, "--rules", str(tmp_path / "rules.yaml"),
         "--confdir", str(tmp_path / "conf")], capture_output=True, text=True, timeout=60)


def test_status_promote_rollback_resume(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    status = cutover(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert "running, Bastion gets 1 %" in status.stdout
    assert "error_rate_increase_pp" in status.stdout and "95 % [" in status.stdout
    assert "next:     wait (not enough data: bastion 0/200 requests" in status.stdout

    promoted = cutover(tmp_path, "promote", "--access-log", str(tmp_path / "access.log"))
    assert promoted.returncode == 0, promoted.stderr
    assert "promote: 1 % -> 5 %" in promoted.stdout
    record = json.loads((tmp_path / "access.log").read_text())
    assert record["event"] == "cutover" and record["decision"] == "promote"
    assert record["by"] == "hand" and record["to_percent"] == 5.0

    assert cutover(tmp_path, "rollback").returncode == 0
    after = cutover(tmp_path, "status")  # a new process: the state was kept
    assert "rolled_back, Bastion gets 0 %" in after.stdout
    assert "rollback  5.0 -> 0.0 %  by hand" in after.stdout
    assert "error_rate_increase_pp" in after.stdout  # the gates, even when stopped
    resumed = cutover(tmp_path, "resume")
    assert "Bastion gets 1 %" in resumed.stdout
    assert (tmp_path / "conf" / "canary.sqlite3").is_file()


def test_status_notes_a_non_canary_mode(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("cutover: {mode: split, split_percent: 10}\n")
    status = cutover(tmp_path, "status")
    assert status.returncode == 0
    assert "cutover.mode is split, not canary" in status.stderr


def test_check_shows_the_mode_and_both_upstreams(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    check = subprocess.run([str(BASTION_EDGE), "check", "--rules-only",
                            "--rules", str(tmp_path / "rules.yaml")],
                           capture_output=True, text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin",
                                "BASTION_OPENAI_URL": "https://openai.test"})
    assert check.returncode == 0, check.stderr
    assert "cutover: canary (steps 1, 5, 25, 50, 100 %; on failure rollback" in check.stdout
    assert "Bastion: https://api.qubittron.ai/v1   OpenAI: https://openai.test" in check.stdout
