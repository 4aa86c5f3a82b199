"""`bastion_edge_batch_*` metrics, registered on BastionEdge's registry (bounded labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from bastion_edge.batch.batch_shapes import ACTIVE, TERMINAL


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.batches = Gauge("bastion_edge_batches", "Batches in the store, by status.",
                             ["status"], registry=r,
                             multiprocess_mode="livemax")  # one store: any worker's count
        for status in (*ACTIVE, *TERMINAL):
            self.batches.labels(status)
        self.lines = Counter("bastion_edge_batch_lines",
                             "Batch lines finished by this proxy, by outcome.", ["outcome"],
                             registry=r)
        for outcome in ("completed", "failed"):
            self.lines.labels(outcome)
        self.retries = Counter("bastion_edge_batch_retries",
                               "Batch line attempts retried after Bastion's 429/5xx or a "
                               "transport error.", registry=r)
        self.queue_depth = Gauge("bastion_edge_batch_queue_depth",
                                 "Lines of the batches this proxy runs not finished yet.",
                                 registry=r, multiprocess_mode="livesum")
        self.api = Counter("bastion_edge_batch_api_requests",
                           "Files and Batch API requests answered, by action and status.",
                           ["action", "status"], registry=r)
        self.file_bytes = Counter("bastion_edge_batch_file_bytes",
                                  "Bytes of files uploaded.", registry=r)
