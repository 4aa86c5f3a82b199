"""`quota:` of an app in rules.yaml (and the default for apps without one).

```yaml
clients:
  default_quota: {requests_per_minute: 60}       # apps without a quota: of their own
  quota_store_outage: fail_open                  # or fail_closed (default fail_open)
  apps:
    - name: billing
      secret_sha256: ...
      quota: {requests_per_minute: 600, tokens_per_minute: 200000, tokens_per_day: 5000000}
    - name: batch-jobs
      secret_sha256: ...
      quota: {}                                  # {} or null: no limits, not the default
```

Every field is optional; a missing or null field is not limited. Errors name the YAML
location (`clients.apps[0].quota.requests_per_minute: expected a positive integer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bastion_edge.config.reader import Path_, Reader, RulesError

OutageMode = Literal["fail_open", "fail_closed"]
OUTAGE_MODES: tuple[OutageMode, ...] = ("fail_open", "fail_closed")


@dataclass(frozen=True, slots=True)
class Quota:
    """What one app may spend; None: that dimension is not limited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None

    @property
    def limits_anything(self) -> bool:
        return (self.requests_per_minute is not None or self.tokens_per_minute is not None
                or self.tokens_per_day is not None)


NO_QUOTA = Quota()

FIELDS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")

# (field or None for the quota itself, message) -> the error to raise
_Fail = Callable[[str | None, str], RulesError]


def parse_quota(value: object, where: str) -> Quota:
    """`value` (the YAML under `where`, e.g. `clients.apps[0].quota`) as a Quota."""
    def fail(name: str | None, message: str) -> RulesError:
        return RulesError(f"{where}.{name}" if name else where, message)

    return _quota(value, fail)


def parse_outage_mode(value: object, where: str) -> OutageMode:
    """`fail_open` or `fail_closed`."""
    for mode in OUTAGE_MODES:
        if value == mode:
            return mode
    raise RulesError(where, f"expected one of {', '.join(OUTAGE_MODES)}")


def quota_from_rules(parser: Reader, value: object, path: Path_) -> Quota:
    """The same, for `config/rules.py`: errors carry the YAML line too."""
    def fail(name: str | None, message: str) -> RulesError:
        return parser.fail((*path, name) if name else path, message)

    return _quota(value, fail)


def _quota(value: object, fail: _Fail) -> Quota:
    if value is None:
        return NO_QUOTA
    if not isinstance(value, dict):
        raise fail(None, f"expected a mapping of {', '.join(FIELDS)}")
    for key in value:
        if key not in FIELDS:
            raise fail(str(key), f"unknown key; expected one of {', '.join(FIELDS)}")
    found: dict[str, int] = {}
    for name in FIELDS:
        limit = value.get(name)
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise fail(name, "expected a positive integer")
        found[name] = limit
    return Quota(**found)
