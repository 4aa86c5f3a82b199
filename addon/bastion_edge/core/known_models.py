"""The OpenAI model ids apps send (a data file), and which of them each rule covers."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from importlib import resources

from bastion_edge.config.schema import ModelRule


def known_openai_ids() -> tuple[str, ...]:
    text = (resources.files("bastion_edge") / "data" / "openai_model_ids.txt").read_text()
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def coverage(rules: Sequence[ModelRule], known: Sequence[str]) -> dict[str, list[str]]:
    """pattern -> the known ids it decides, the way requests are matched: exact ids
    first, then globs in file order (an id counts for the first rule that takes it)."""
    covered: dict[str, list[str]] = {rule.pattern: [] for rule in rules}
    exact = {rule.pattern for rule in rules if not rule.is_glob}
    globs = [rule.pattern for rule in rules if rule.is_glob]
    for model in known:
        if model in exact:
            covered[model].append(model)
            continue
        pattern = next((g for g in globs if fnmatch.fnmatchcase(model, g)), None)
        if pattern is not None:
            covered[pattern].append(model)
    return covered


def coverage_report(rules: Sequence[ModelRule], known: Sequence[str]) -> str:
    """What `check` prints: each glob's known ids, then the known ids nothing maps."""
    covered = coverage(rules, known)
    lines = ["known OpenAI ids covered by each glob:"]
    lines += [f"  {pattern:<26} {', '.join(ids) or '(none known)'}"
              for pattern, ids in covered.items() if any(c in pattern for c in "*?[")]
    mapped = {model for ids in covered.values() for model in ids}
    missing = [model for model in known if model not in mapped]
    lines.append("known OpenAI ids with no mapping: " + (", ".join(missing) or "none"))
    return "\n".join(lines)
