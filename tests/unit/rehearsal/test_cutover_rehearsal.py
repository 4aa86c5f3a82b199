"""The rules a `try --cutover` rehearsal runs with: the user's rules plus the mode's
cutover section and a private state store, parsed by the real rules loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_edge.config.rules import parse_rules
from bastion_edge.rehearsal.cutover_rehearsal import CUTOVER_MODES, write_rehearsal

SHIPPED = Path(__file__).resolve().parents[3] / "rules.yaml"


@pytest.mark.parametrize("mode", CUTOVER_MODES)
def test_each_mode_parses_keeps_the_models_and_moves_the_store(tmp_path: Path, mode: str) -> None:
    written = write_rehearsal(SHIPPED, mode, tmp_path / mode)
    rules = parse_rules(written.read_text(), str(written))
    shipped = parse_rules(SHIPPED.read_text(), str(SHIPPED))
    assert rules.cutover.mode == mode
    assert rules.models == shipped.models
    assert rules.responses_state.store == f"sqlite:///{(tmp_path / mode).resolve()}/state.sqlite3"


def test_a_canary_rehearsal_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").write_text("an earlier rehearsal")
    written = write_rehearsal(SHIPPED, "canary", tmp_path)
    assert not (tmp_path / "state.sqlite3").exists()
    canary = parse_rules(written.read_text(), str(written)).cutover.canary
    assert canary.steps[-1] == 100 and canary.min_requests == 30
