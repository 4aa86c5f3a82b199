"""A proxy whose wall clock is shifted (libfaketime), so a quota test chooses where the
proxy's fixed UTC minute ends instead of waiting for the real one to turn.

Only the proxy's processes see the shift (`LD_PRELOAD` in their environment); the test,
the SDK and the sandbox keep the real clock. The shift is constant (the clock runs at its
own pace) and under a minute, and monotonic clocks are left alone, so timeouts, TLS
validity and Redis expiries are unchanged. Without libfaketime (`scripts/system-deps`
installs it) the clock is not shifted: the tests still hold, they only wait longer for
the minute to turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

MINUTE = 60.0
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)


@dataclass(frozen=True, slots=True)
class ProxyClock:
    offset: float  # the proxy's time minus the real time, seconds

    def now(self) -> float:
        return time.time() + self.offset

    def minute(self, real_time: float) -> int:
        """The proxy's minute (its quota window) at a real `time.time()`."""
        return int((real_time + self.offset) // MINUTE)

    def env(self) -> dict[str, str]:
        """What to add to a proxy's environment for it to run on this clock."""
        if not self.offset:
            return {}
        return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"+{self.offset:.3f}",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def fresh_minute(self, needed: float) -> None:
        """Wait for the proxy's next minute when fewer than `needed` seconds are left of
        this one (a proxy slow to start may have used them up)."""
        left = MINUTE - self.now() % MINUTE
        if left < needed:
            time.sleep(left + 0.05)


def minute_ending_in(seconds: float) -> ProxyClock:
    """A clock whose current minute ends `seconds` (0 < seconds <= 60) from now."""
    if LIBFAKETIME is None:
        return ProxyClock(0.0)
    offset = (MINUTE - seconds - time.time() % MINUTE) % MINUTE
    return ProxyClock(offset or 0.001)  # 0 would mean "no shift"
