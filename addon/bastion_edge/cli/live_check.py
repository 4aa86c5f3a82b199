"""`bastion-edge check --live`: would every mapped OpenAI id be served right now?

Reads Bastion's model list with each configured key (as the proxy does) and, per
mapped id and choice, shows the target, whether Bastion lists it and the model the
selection core would send now. Exit 1 when some mapped id has no available model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path

from bastion_edge.config.rules import Condition, Rules
from bastion_edge.core.model_availability import (
    NO_NEEDS,
    CapabilityRefusal,
    RequestNeeds,
    select_candidates,
)
from bastion_edge.proxy.model_catalog import ModelCatalog, configured_keys


@dataclass(frozen=True, slots=True)
class LiveRow:
    openai_id: str
    when: Condition
    target: str
    listed: bool
    serving: str | None  # None: nothing would serve this choice now
    note: str = ""


def needs_of_condition(condition: Condition) -> RequestNeeds:
    """What a request matching `condition` certainly needs (image input, prompt size)."""
    if condition.has_image is None and condition.prompt_tokens_over is None:
        return NO_NEEDS
    tokens = condition.prompt_tokens_over + 1 if condition.prompt_tokens_over is not None else 0
    return RequestNeeds(vision=bool(condition.has_image), prompt_tokens=tokens)


def live_rows(rules: Rules, available: Set[str]) -> list[LiveRow]:
    """One row per mapped id and choice, in rules order."""
    rows = []
    for rule in rules.models:
        for choice in rule.choices:
            selection = select_candidates(choice.use, needs_of_condition(choice.when),
                                          rules.capabilities, rules.fallbacks, available)
            listed = choice.use in available
            if isinstance(selection, CapabilityRefusal):
                serving, note = None, f"no model of its chain supports {selection.capability}"
            elif selection.none_listed:
                serving, note = None, "neither it nor a fallback is listed"
            else:
                serving = selection.first
                note = "" if serving == choice.use else "fallback: " + ", ".join(
                    f"{m} {why}" for m, why in selection.skipped)
            rows.append(LiveRow(rule.pattern, choice.when, choice.use, listed, serving, note))
    return rows


def format_rows(rows: list[LiveRow], describe: Callable[[Condition], str]) -> str:
    lines = [f"{'OpenAI model':<24} {'when':<30} {'target':<30} {'listed':<7} serving now",
             f"{'-' * 24} {'-' * 30} {'-' * 30} {'-' * 7} {'-' * 30}"]
    for row in rows:
        serving = row.serving or "NONE"
        note = f"  ({row.note})" if row.note else ""
        lines.append(f"{row.openai_id:<24} {describe(row.when):<30} {row.target:<30} "
                     f"{'yes' if row.listed else 'NO':<7} {serving}{note}")
    return "\n".join(lines)


async def live_check(rules: Rules, environ: Mapping[str, str], confdir: Path,
                     describe: Callable[[Condition], str]) -> tuple[int, str]:
    """(exit status, report). Keys are named by their variables, never shown."""
    catalog = ModelCatalog(log_failures=False)  # the report says why
    ok = await catalog.refresh(rules, environ, confdir)
    keys = ", ".join(f"${k}" for k in configured_keys(rules, environ)) or "none set"
    header = f"live: {rules.upstream.base_url} (keys: {keys})"
    available = catalog.available_models()
    if not ok or available is None:
        return 1, "\n".join([header, "could not read Bastion's model list:",
                             *(f"  {e}" for e in catalog.last_errors)])
    rows = live_rows(rules, available)
    missing = sorted({r.openai_id for r in rows if r.serving is None})
    verdict = (f"{len(missing)} mapped id(s) have no available model: {', '.join(missing)}"
               if missing else "every mapped id has an available model")
    report = "\n".join([header, f"Bastion lists {len(available)} model(s)", "",
                        format_rows(rows, describe), "", verdict])
    return (1 if missing else 0), report
