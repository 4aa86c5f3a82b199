"""bench/canary_sim.py drives core.canary as the bench says (a few seeded runs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from bastion_edge.config.canary_rules import CanaryRules


def load_sim() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "bench" / "canary_sim.py"
    spec = importlib.util.spec_from_file_location("canary_sim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_worse_bastion_rolls_back_and_equal_promotes() -> None:
    sim = load_sim()
    rules = CanaryRules(min_requests=100, min_seconds=0)
    worse = sim.simulate(4, 0.20, openai_error=0.02, seed=1, rules=rules)
    assert (worse.runs, worse.rolled_back) == (4, 4)
    equal = sim.simulate(3, 0.0, openai_error=0.0, seed=2, rules=rules)
    assert (equal.completed, equal.rolled_back) == (3, 0)
    assert "| equal (2 % vs 2 %) | 3 |" in sim.describe(equal, worse)
