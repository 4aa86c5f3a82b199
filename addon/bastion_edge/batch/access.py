"""One access-log record per batch line, marked as batch work."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bastion_edge.batch.batch_shapes import BatchLine, Json
from bastion_edge.batch.lines import BATCH_NOTE
from bastion_edge.core.plan import Plan
from bastion_edge.telemetry.access_log import AccessRecord


def line_record(plan: Plan, batch_id: str, line: BatchLine, request_id: str,
                status: int | None, started: float, bytes_in: int,
                error: Json | None) -> AccessRecord:
    finished = time.time()
    return AccessRecord(
        time=datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds"),
        request_id=request_id, client=plan.facts.client_ip, app=plan.facts.app,
        method="POST", path=plan.path, endpoint=plan.endpoint, original_host="batch",
        upstream_host=plan.upstream_host, original_model=plan.original_model,
        upstream_model=plan.upstream_model, destination=plan.destination.provider,
        decision=plan.decision_label, status=status,
        duration_ms=round((finished - started) * 1000, 3), ttfb_ms=None, bytes_in=bytes_in,
        bytes_out=0, stream=False, rewrites=list(plan.rewrites),
        key_env=plan.key.env if plan.key is not None else None,
        error=plan.refusal.code if plan.refusal is not None
        else (error or {}).get("code"),
        notes=[*[n for n in plan.notes if n != BATCH_NOTE],
               f"{BATCH_NOTE}: {batch_id} line {line.number} custom_id {line.custom_id}"])
