"""Shutdown through mitmproxy's own `done` dispatch: whatever finishes while the proxy
stops (a mirrored copy still in flight, a batch line finishing in its grace period)
still gets its access-log record, because the access log closes last."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import hooks, http
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import layers
from mitmproxy.test import taddons, tflow

from bastion_edge.batch import runner as batch_runner
from bastion_edge.proxy import mirror as mirror_module
from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.proxy.mirror import Mirror, MirrorRequest, MirrorResult
from bastion_edge.telemetry.access_log import AccessRecord

SHIPPED_RULES = (Path(__file__).resolve().parents[2] / "rules.yaml").read_text()
ENV = {"QUBITTRON_API_KEY": "bk-test-shutdown", "BASTION_BASE_URL": "https://127.0.0.1:9443/v1"}


def chat_flow() -> http.HTTPFlow:
    flow = tflow.tflow()
    request = flow.request
    request.method, request.scheme, request.host, request.port = "POST", "https", \
        "api.openai.com", 443
    request.path = "/v1/chat/completions"
    request.headers = http.Headers(host="api.openai.com", authorization="Bearer sk-app",
                                   content_type="application/json")
    request.content = json.dumps({"model": "gpt-4o-mini",
                                  "messages": [{"role": "user", "content": "hi"}]}).encode()
    return flow


def hooks_of(flow: http.HTTPFlow, name: str) -> hooks.Hook:
    """mitmproxy's hook event `name` for this flow, as the proxy core sends it."""
    hook: type[hooks.Hook] = {
        "requestheaders": layers.http.HttpRequestHeadersHook,
        "request": layers.http.HttpRequestHook,
        "responseheaders": layers.http.HttpResponseHeadersHook,
        "response": layers.http.HttpResponseHook}[name]
    return hook(flow)  # type: ignore[call-arg]


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_a_mirror_copy_in_flight_at_shutdown_is_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SHIPPED_RULES + "\ncutover: {mode: mirror}\n")
    log_path = tmp_path / "access.jsonl"
    release = asyncio.Event()  # the copy answers only once shutdown drains the mirror

    async def held_copy(client: Any, copy: MirrorRequest) -> MirrorResult:
        await release.wait()
        return MirrorResult(200, 1.0, 1.0, True)

    drain = Mirror.drain

    async def draining(self: Mirror) -> None:
        release.set()
        await drain(self)

    monkeypatch.setattr(mirror_module, "send_copy", held_copy)
    monkeypatch.setattr(Mirror, "drain", draining)
    edge = BastionEdge(environ=dict(ENV))
    with taddons.context(proxyserver.Proxyserver(), edge) as tctx:
        tctx.configure(edge, confdir=str(tmp_path / "confdir"), bastion_rules=str(rules),
                       bastion_metrics_port=0, bastion_access_log=str(log_path))
        await tctx.master.addons.trigger_event(hooks.RunningHook())
        flow = chat_flow()
        events = tctx.master.addons
        await events.trigger_event(hooks_of(flow, "requestheaders"))
        await events.trigger_event(hooks_of(flow, "request"))
        flow.response = http.Response.make(
            200, json.dumps({"id": "chatcmpl-1", "object": "chat.completion",
                             "model": "gpt-4o-mini", "choices": []}).encode(),
            {"content-type": "application/json"})
        await events.trigger_event(hooks_of(flow, "responseheaders"))
        await events.trigger_event(hooks_of(flow, "response"))
        assert not release.is_set()  # the copy is still in flight
        await tctx.master.addons.trigger_event(hooks.DoneHook())
    logged = records(log_path)
    assert [r.get("mirror") for r in logged] == [MirrorResult(200, 1.0, 1.0, True).to_dict()]


async def test_a_batch_line_finishing_at_shutdown_is_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner logs a line that finishes during its stop grace period."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(SHIPPED_RULES)
    log_path = tmp_path / "access.jsonl"
    stop = batch_runner.BatchRunner.stop

    async def stop_finishing_a_line(self: batch_runner.BatchRunner) -> None:
        await asyncio.sleep(0)
        self._log(AccessRecord(
            time="2026-01-01T00:00:00Z", request_id="batch-line-1", client=None, app=None,
            method="POST", path="/v1/chat/completions", endpoint="chat.completions",
            original_host="api.openai.com", upstream_host=None, original_model=None,
            upstream_model=None, destination="bastion", decision="rewrite", status=200,
            duration_ms=1.0, ttfb_ms=None, bytes_in=0, bytes_out=0, stream=False))
        await stop(self)

    monkeypatch.setattr(batch_runner.BatchRunner, "stop", stop_finishing_a_line)
    edge = BastionEdge(environ=dict(ENV))
    with taddons.context(proxyserver.Proxyserver(), edge) as tctx:
        tctx.configure(edge, confdir=str(tmp_path / "confdir"), bastion_rules=str(rules),
                       bastion_metrics_port=0, bastion_access_log=str(log_path))
        await tctx.master.addons.trigger_event(hooks.RunningHook())
        await tctx.master.addons.trigger_event(hooks.DoneHook())
    assert [r["request_id"] for r in records(log_path)] == ["batch-line-1"]
