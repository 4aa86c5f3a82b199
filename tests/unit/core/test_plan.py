"""A plan change names real fields with the right types: mypy rejects a misspelt or
mistyped `Plan._replace` keyword (it used to go through `evolve(**changes: Any)`)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

REPO = Path(__file__).resolve().parents[3]

SNIPPET = '''
from bastion_edge.core.plan import Plan

def good(plan: Plan) -> Plan:
    return plan._replace(upstream_model="gpt-oss-120b", stream=True)

def misspelt(plan: Plan) -> Plan:
    return plan._replace(upstrem_model="gpt-oss-120b")

def mistyped(plan: Plan) -> Plan:
    return plan._replace(stream="yes")
'''


def test_mypy_checks_every_plan_change(tmp_path: Path) -> None:
    module = tmp_path / "plan_changes.py"
    module.write_text(SNIPPET)
    out, _, status = api.run([
        "--strict", "--follow-imports=silent", "--no-error-summary",
        "--cache-dir", str(REPO / ".mypy_cache"), str(module)])
    errors = [(line.split(":")[1], line.rsplit("[", 1)[1]) for line in out.splitlines()
              if ": error: " in line]
    assert status == 1
    assert errors == [("8", "call-arg]"), ("11", "arg-type]")], out  # not line 5: good


def test_no_untyped_way_to_change_a_plan() -> None:
    from bastion_edge.core.plan import Plan

    assert not hasattr(Plan, "evolve")  # `evolve(**changes: Any)` hid typos from mypy
