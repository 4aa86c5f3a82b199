"""`bastion-edge try --cutover MODE`: the rules a cutover rehearsal runs with.

The user's rules with a `cutover:` section for the mode and the state store moved into the
rehearsal's own directory, so a canary rehearsal starts at its first step and never
leaves state in the confdir a real `run` uses. The canary's gates are loose on purpose
(a few hundred requests visibly promote it); real rules keep the shipped gates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CUTOVER_MODES = ("split", "mirror", "canary")
SECTIONS: dict[str, dict[str, Any]] = {
    "split": {"mode": "split", "split_percent": 50, "sticky_by": "app"},
    "mirror": {"mode": "mirror", "mirror_agreement_share": 1},
    "canary": {"mode": "canary", "canary": {
        "steps": [50, 100], "min_requests": 30, "min_seconds": 10,
        "gates": {"max_error_rate_increase_pp": 15, "max_p95_ratio": None,
                  "min_agreement": None},
        "on_fail": "rollback"}},
}


def rehearsal_rules(rules_text: str, mode: str, state_dir: Path) -> str:
    """`rules_text` with the rehearsal's cutover section and a private state store."""
    rules = yaml.safe_load(rules_text) or {}
    if not isinstance(rules, dict):
        raise ValueError("the rules file is not a mapping")
    rules["cutover"] = {**SECTIONS[mode]}
    state = rules.get("responses_state")
    rules["responses_state"] = {**(state if isinstance(state, dict) else {}),
                                "store": f"sqlite:///{state_dir.resolve()}/state.sqlite3"}
    return yaml.safe_dump(rules, sort_keys=False)


def write_rehearsal(rules: Path, mode: str, directory: Path) -> Path:
    """The rehearsal's rules file in `directory`, its earlier state removed."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("state.sqlite3*"):
        old.unlink()
    out = directory / "rules.yaml"
    out.write_text(rehearsal_rules(rules.read_text(), mode, directory))
    return out
