"""Guessing proxy secrets: a failure window per source and a cool-down.

Each failed proxy authentication (wrong name or secret, malformed credentials) is
counted against its source: the client's address (its IP, not its port) and the app
name it tried (`failure_key`). Once a source has `threshold` failures within
`window_seconds`, it is refused outright for `cooldown_seconds`: 429
`proxy_auth_throttled` with `retry-after`, its credentials not even checked (so a
correct guess during the cool-down is not confirmed either). Keyed by address AND app
name because the containers of a pod share one loopback address: an app with a stale
secret cools down only itself, not its neighbours, while guesses at any one app stay
bounded to `threshold` per window per address. A success does not clear the window.
The gate keeps a second window per address alone to bound its log lines (a spray of
made-up names). At most `max_sources` sources are remembered (the oldest forgotten
first), so a spray of addresses or names cannot grow memory without bound.

Pure: the caller passes the time (monotonic seconds); no mitmproxy here.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from bastion_edge.errors import ApiError

THRESHOLD = 20
WINDOW_SECONDS = 60.0
COOLDOWN_SECONDS = 60.0
MAX_SOURCES = 10_000


@dataclass
class AuthFailures:
    threshold: int = THRESHOLD
    window_seconds: float = WINDOW_SECONDS
    cooldown_seconds: float = COOLDOWN_SECONDS
    max_sources: int = MAX_SOURCES
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _blocked_until: dict[str, float] = field(default_factory=dict)

    def blocked_for(self, source: str, now: float) -> float:
        """Seconds `source` is still refused (0: it may try)."""
        until = self._blocked_until.get(source)
        if until is None:
            return 0.0
        if now >= until:
            del self._blocked_until[source]
            return 0.0
        return until - now

    def failed(self, source: str, now: float) -> bool:
        """Count a failure; True if it starts a cool-down for `source`."""
        times = self._failures.pop(source, None) or deque()
        times.append(now)
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if len(times) >= self.threshold:
            self._blocked_until[source] = now + self.cooldown_seconds
            return True
        self._failures[source] = times  # most recent last
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)
        if len(self._blocked_until) > self.max_sources:
            for old in [s for s, until in self._blocked_until.items() if until <= now]:
                del self._blocked_until[old]
        return False


def failure_key(address: str, app: str | None) -> str:
    """What a failure is counted against: the address and the app name tried."""
    return f"{address} app={app or '-'}"


def source_of(peer: tuple[str, int] | None) -> str:
    """The address a failure is counted against (IPv4-mapped shown as IPv4)."""
    if not peer:
        return "unknown"
    host = str(peer[0])
    return host.removeprefix("::ffff:") if "." in host else host


def shown_name(user: str | None) -> str:
    """The app name a client tried, safe for a log line (never the secret)."""
    if user is None:
        return "-"
    printable = "".join(c if c.isprintable() else "?" for c in user)
    return printable[:64] + ("…" if len(printable) > 64 else "")


def auth_throttled(retry_after: float) -> ApiError:
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        f"bastion-edge: too many failed proxy authentications from this address; "
        f"try again in {seconds} s.",
        "proxy_auth_throttled", "rate_limit_error")


def retry_after_header(retry_after: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(retry_after)))}
