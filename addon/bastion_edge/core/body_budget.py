"""One process-wide budget for the request bodies held in memory
(`limits.max_buffered_body_bytes_total`).

`max_json_body_bytes` bounds one body; without a bound on their sum, 34 clients each
sending 15 MiB and holding the last byte grow the process by half a GiB. As Envoy's
overload manager does for its buffers, each buffered body reserves its bytes as they
arrive; a body whose next chunk does not fit is refused (503, `retry-after`) and its
reservation dropped. A reservation is released when its flow ends (the body is held
until then: mitmproxy keeps `request.content` on the flow) or its client disconnects.

Plain bookkeeping: the caller names the holder, a `(client, flow)` pair, and the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Holder = tuple[str, str]  # (client connection id, flow id)


@dataclass(slots=True)
class BodyBudget:
    held: dict[Holder, int] = field(default_factory=dict)  # holder -> bytes reserved
    total: int = 0  # sum of `held`

    def reserve(self, holder: Holder, size: int, budget: int) -> bool:
        """Grow (or set) `holder`'s reservation to `size` bytes. False, and nothing
        changed, when the other holders' bytes plus `size` would exceed `budget`."""
        before = self.held.get(holder, 0)
        if size <= before:
            return True
        if self.total - before + size > budget:
            return False
        self.held[holder] = size
        self.total += size - before
        return True

    def release(self, holder: Holder) -> int:
        """Drop `holder`'s reservation; the bytes it held (0 if none)."""
        size = self.held.pop(holder, 0)
        self.total -= size
        return size

    def release_client(self, client: str) -> int:
        """Drop every reservation of one client (holders are `(client, flow)` pairs);
        the bytes freed."""
        gone = [h for h in self.held if h[0] == client]
        return sum(self.release(h) for h in gone)
