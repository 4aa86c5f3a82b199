"""What the proxy's addons share, and nothing else: one small object passed to each.

- the current rules snapshot (`Policy`: the rules and their model map), replaced whole
  by the rules addon only (`publish`, then `announce` to those who asked); everyone
  else reads it;
- the metrics registry;
- the ports of the proxy's internal listeners (TTS adapter, batch server, admin), each
  reported by the addon that owns the listener.

The trust boundary (`gate.py`) and the connection guard read this, never the root
addon, so `gate.py` does not import `addon.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bastion_edge.config.rules import Rules
from bastion_edge.core.planner import Policy
from bastion_edge.telemetry.metrics import Metrics

# What a Bastion key is replaced with wherever a flow stays on screen (mitmweb, flow files).
REDACTED = "Bearer [redacted by bastion-edge]"

RulesListener = Callable[[Rules, bool], None]  # (the rules now, hot-reloaded?)


class Shared:
    def __init__(self, environ: Mapping[str, str], metrics: Metrics) -> None:
        self.environ = environ
        self.metrics = metrics
        self._policy = Policy.of(Rules())
        self._loaded = False
        self._ports: list[tuple[Callable[[], int | None], bool]] = []
        self._listeners: list[RulesListener] = []

    # ---------------------------------------------------------------- read

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def rules(self) -> Rules:
        return self._policy.rules

    @property
    def rules_loaded(self) -> bool:
        return self._loaded

    def internal_ports(self) -> tuple[int, ...]:
        """The ports the proxy's own in-process listeners are bound to now."""
        return tuple(port for port in (get() for get, _ in self._ports) if port)

    def dialed_ports(self) -> tuple[int, ...]:
        """Those of them the proxy itself sends requests to (TTS adapter, batch server)."""
        return tuple(port for port in (get() for get, dialed in self._ports if dialed) if port)

    # ---------------------------------------------------------------- declare

    def listener(self, port: Callable[[], int | None], *, dialed: bool) -> None:
        """An addon that owns an internal listener reports its port here; `dialed`: the
        proxy routes requests to it (an own upstream, exempt from the egress policy)."""
        self._ports.append((port, dialed))

    def on_rules(self, listener: RulesListener) -> None:
        """Called after each rules change is published (in registration order)."""
        self._listeners.append(listener)

    # ---------------------------------------------------------------- write (rules addon only)

    def publish(self, rules: Rules) -> None:
        self._policy = Policy.of(rules)
        self._loaded = True

    def announce(self, rules: Rules, reloaded: bool) -> None:
        for listener in self._listeners:
            listener(rules, reloaded)


def keeps_flows(options: Any) -> bool:
    """mitmweb or a flow file keeps flows on screen or disk: keys must be redacted."""
    return "web_port" in options or bool(getattr(options, "save_stream_file", None))
