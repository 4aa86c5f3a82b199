"""OpenAI model id -> Bastion model id, by the rules: exact ids first, then globs in
file order; within an entry the first choice whose `when` holds wins."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from bastion_edge.config.schema import ModelRule, Rules
from bastion_edge.core.conditions import holds
from bastion_edge.core.facts import RequestFacts


@dataclass(frozen=True, slots=True)
class Resolution:
    requested: str
    upstream: str
    rule: str  # the `models:` key that matched, e.g. "gpt-4o" or "gpt-4o-*"
    choice: int  # index of the choice within that entry

    @property
    def changed(self) -> bool:
        return self.requested != self.upstream


class ModelMap:
    """Resolves requested model ids against one immutable rules snapshot."""

    def __init__(self, rules: Rules) -> None:
        self._exact: dict[str, ModelRule] = {}
        self._globs: list[ModelRule] = []
        for rule in rules.models:
            if rule.is_glob:
                self._globs.append(rule)
            else:
                self._exact.setdefault(rule.pattern, rule)
        self.targets = frozenset(c.use for r in rules.models for c in r.choices)
        self.sources = frozenset(self._exact)

    def resolve(self, requested: str, facts: RequestFacts) -> Resolution | None:
        """The Bastion model for `requested`, or None when no rule applies."""
        rule = self._exact.get(requested)
        if rule is not None:
            found = _choose(rule, requested, facts)
            if found is not None:
                return found
        for rule in self._globs:
            if fnmatch.fnmatchcase(requested, rule.pattern):
                found = _choose(rule, requested, facts)
                if found is not None:
                    return found
        return None

    def is_bastion_model(self, model: str) -> bool:
        """True for ids that are rule targets (already Bastion ids: pass unchanged)."""
        return model in self.targets and model not in self.sources


def _choose(rule: ModelRule, requested: str, facts: RequestFacts) -> Resolution | None:
    for index, choice in enumerate(rule.choices):
        if holds(choice.when, facts):
            return Resolution(requested, choice.use, rule.pattern, index)
    return None
