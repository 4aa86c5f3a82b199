"""The canary's own error rates: how often the shipped gates roll back, by simulation.

Traffic is simulated, the decisions are core.canary's own: each run draws exchanges
for both sides (Bastion gets the step's percent), calls `decide` each time the smaller
side has grown by `LOOK_GROWTH` once a step has its minimum, and applies what it says,
until the canary completes, rolls back or runs out of `MAX_PER_STEP` exchanges on a step (counted
as undecided). `min_seconds` is met by the clock advancing one second per exchange.
Latencies are log-normal, equal on both sides; the gates are the shipped defaults.

  equal        both sides fail 2 % of requests: a rollback is a false alarm
  worse_3pp    Bastion fails 5 %, OpenAI 2 %: a promotion to 100 % is a miss

`make bench-canary` prints the table and writes it into the README; `make bench`
includes it. Fixed seeds: the same run gives the same figures.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from bastion_edge.config.canary_rules import CanaryRules
from bastion_edge.core.canary import (
    MAX_LATENCY_SAMPLES,
    CanaryState,
    SideStats,
    StepStats,
    apply,
    decide,
    initial_state,
)
from bastion_edge.core.intervals import wilson

LOOK_GROWTH = 1.02  # a decision each time the smaller side has grown by 2 %
MAX_PER_STEP = 200_000  # exchanges on one step before a run counts as undecided
BASE_ERROR = 0.02


@dataclass
class Outcome:
    runs: int = 0
    rolled_back: int = 0
    completed: int = 0
    undecided: int = 0
    exchanges: int = 0


def _side(n: int, errors: int, durations: list[float]) -> SideStats:
    return SideStats(n, errors, tuple(durations[-MAX_LATENCY_SAMPLES:]))


def one_run(rules: CanaryRules, bastion_error: float, openai_error: float,
            rng: random.Random) -> tuple[str, int]:
    """'complete', 'rollback' or 'undecided', and the exchanges it took."""
    now = 0.0
    state: CanaryState = initial_state(now)
    total = 0
    while state.status == "running":
        percent = state.percent(rules) / 100
        counts = {True: [0, 0], False: [0, 0]}  # to Bastion? -> [requests, errors]
        durations: dict[bool, list[float]] = {True: [], False: []}
        seen, next_look = 0, rules.min_requests
        while True:
            to_bastion = rng.random() < percent
            rate = bastion_error if to_bastion else openai_error
            counts[to_bastion][0] += 1
            counts[to_bastion][1] += rng.random() < rate
            durations[to_bastion].append(rng.lognormvariate(6.0, 0.5))
            seen += 1
            now += 1.0
            smaller = min(counts[True][0], counts[False][0])
            if smaller < next_look or now - state.step_started < rules.min_seconds:
                if seen >= MAX_PER_STEP:
                    return "undecided", total + seen
                continue
            next_look = max(smaller + 1, int(smaller * LOOK_GROWTH))
            stats = StepStats(_side(counts[True][0], counts[True][1], durations[True]),
                              _side(counts[False][0], counts[False][1], durations[False]))
            decision = decide(state, stats, rules, now)
            if decision.action != "wait":
                state = apply(state, decision, rules, now)
                break
            if seen >= MAX_PER_STEP:
                return "undecided", total + seen
        total += seen
    return ("complete" if state.status == "complete" else "rollback"
            if state.status == "rolled_back" else "undecided"), total


def simulate(runs: int, bastion_error: float, openai_error: float = BASE_ERROR,
             seed: int = 26, rules: CanaryRules | None = None) -> Outcome:
    rules = rules or CanaryRules()
    rng = random.Random(seed)
    out = Outcome()
    for _ in range(runs):
        result, exchanges = one_run(rules, bastion_error, openai_error, rng)
        out.runs += 1
        out.exchanges += exchanges
        out.rolled_back += result == "rollback"
        out.completed += result == "complete"
        out.undecided += result == "undecided"
    return out


def _share(k: int, n: int) -> str:
    w = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f} % (95 % CI {100 * w.low:.1f} to {100 * w.high:.1f} %)"


def describe(equal: Outcome, worse: Outcome) -> str:
    g = CanaryRules().gates
    return (
        f"Simulated with the shipped gates (steps {list(map(int, CanaryRules().steps))}, "
        f"min_requests {CanaryRules().min_requests} per side, error-rate increase ≤ "
        f"{g.max_error_rate_increase_pp} pp, p95 ratio ≤ {g.max_p95_ratio}; agreement off: "
        f"no mirrored pairs), a decision each time the smaller side has grown by "
        f"{round((LOOK_GROWTH - 1) * 100)} % once a step has its minimum; one exchange a "
        f"second (`python bench/canary_sim.py`):\n\n"
        "| case | runs | rolled back | promoted to 100 % | undecided | mean exchanges |\n"
        "|---|---:|---|---|---:|---:|\n"
        f"| equal (2 % vs 2 %) | {equal.runs} | {_share(equal.rolled_back, equal.runs)} | "
        f"{_share(equal.completed, equal.runs)} | {equal.undecided} | "
        f"{equal.exchanges / equal.runs:,.0f} |\n"
        f"| Bastion 3 pp worse (5 % vs 2 %) | {worse.runs} | "
        f"{_share(worse.rolled_back, worse.runs)} | {_share(worse.completed, worse.runs)} | "
        f"{worse.undecided} | {worse.exchanges / worse.runs:,.0f} |")


def run(runs: int) -> str:
    equal = simulate(runs, BASE_ERROR, seed=26)
    worse = simulate(runs, BASE_ERROR + 0.03, seed=27)
    return describe(equal, worse)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    text = run(args.runs)
    print(text)
    if args.readme:
        sys.path.insert(0, str(Path(__file__).parent))
        from run import write_readme

        write_readme(args.readme, text, "bench-canary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
