"""An Info metric that works in prometheus-client's multiprocess mode (`--workers`).

`Info` is not supported there, so the pool's workers publish `<name>_info{labels} 1` as a
gauge (live workers' maximum): the same series text an `Info` gives. On a change the
previous label set is set to 0 (files cannot drop a series)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class GaugeInfo:
    def __init__(self, name: str, documentation: str, labels: list[str],
                 registry: CollectorRegistry) -> None:
        self._labels = labels
        self._gauge = Gauge(f"{name}_info", documentation, labels, registry=registry,
                            multiprocess_mode="livemax")
        self._current: dict[str, str] | None = None

    def info(self, values: dict[str, str]) -> None:
        if self._current is not None and self._current != values:
            self._gauge.labels(*(self._current[k] for k in self._labels)).set(0)
        self._gauge.labels(*(values[k] for k in self._labels)).set(1)
        self._current = dict(values)
