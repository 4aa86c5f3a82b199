"""`bastion_edge_responses_*` metrics, registered on BastionEdge's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_ITEM_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class StateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.stored = Counter(
            "bastion_edge_responses_stored", "Responses stored for later chaining or retrieval.",
            registry=r)
        self.expanded = Counter(
            "bastion_edge_responses_expanded",
            "Requests whose previous_response_id was expanded into input items.", registry=r)
        self.expanded_items = Histogram(
            "bastion_edge_responses_expanded_items",
            "Items prepended to an expanded request.", buckets=_ITEM_BUCKETS, registry=r)
        self.evicted = Counter(
            "bastion_edge_responses_evicted", "Stored responses dropped, by reason.",
            ["reason"], registry=r)
        self.answered = Counter(
            "bastion_edge_responses_answered",
            "Retrieve, delete and input_items requests answered from the store.",
            ["operation", "status"], registry=r)
        self.store_seconds = Histogram(
            "bastion_edge_responses_store_seconds", "Latency of response store operations.",
            ["operation"], buckets=_STORE_BUCKETS, registry=r)
        self.store_errors = Counter(
            "bastion_edge_responses_store_errors", "Failed response store operations.",
            ["operation"], registry=r)
