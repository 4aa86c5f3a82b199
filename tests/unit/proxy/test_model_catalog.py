"""The live model catalog against a real sandbox over TLS (and httpx's MockTransport)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from sandbox_support import AUTH, client_for, run_sandbox_thread

from bastion_edge.config.rules import Condition, KeyRule, Rules, UpstreamRules, parse_rules
from bastion_edge.proxy.model_catalog import (
    ModelCatalog,
    ModelListError,
    configured_bastion_models,
    configured_keys,
    fetch_model_ids,
)
from bastion_edge.telemetry.metrics import Metrics
from bastion_sandbox import RunningSandbox

KEY = "bastion-test-key"
STAGING_KEY = "bastion-staging-key"
ENV = {"QUBITTRON_API_KEY": KEY}
RULES_TEXT = """
models:
  gpt-4o-mini: gpt-oss-20b
  gpt-4o: gpt-oss-120b
fallbacks:
  gpt-oss-20b: [Llama-3.1-8B-Instruct]
capabilities:
  Qwen2.5-VL-72B-Instruct: {tools: false}
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(tmp_path_factory.mktemp("tls"),
                                  api_keys=frozenset({KEY, STAGING_KEY}))


@pytest.fixture()
def admin(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client_for(sandbox, headers=AUTH) as c:
        yield c
        c.delete("/sandbox/models")


def _rules(sandbox: RunningSandbox, **changes: object) -> Rules:
    rules = parse_rules(RULES_TEXT)
    upstream = UpstreamRules(base_url=sandbox.base_url, ca_file=sandbox.ca_path)
    return replace(rules, upstream=upstream, **changes)  # type: ignore[arg-type]


def _metric(metrics: Metrics, line_start: str) -> str:
    text = generate_latest(metrics.registry).decode()
    return next(line for line in text.splitlines() if line.startswith(line_start))


def test_unknown_until_the_first_read() -> None:
    catalog = ModelCatalog()
    assert catalog.available("gpt-oss-20b") is None
    assert catalog.available_models() is None


def test_refresh_reads_the_list_and_publishes_metrics(
        sandbox: RunningSandbox, admin: httpx.Client, tmp_path: Path) -> None:
    metrics = Metrics()
    catalog = ModelCatalog(metrics, clock=lambda: 1234.0)
    admin.patch("/sandbox/models/Llama-3.1-8B-Instruct", json={"available": False})
    assert asyncio.run(catalog.refresh(_rules(sandbox), ENV, tmp_path))
    assert catalog.available("gpt-oss-20b") is True
    assert catalog.available("Llama-3.1-8B-Instruct") is False
    assert catalog.refreshed_at == 1234.0
    assert _metric(metrics, 'bastion_edge_model_available{model="gpt-oss-20b"}').endswith(" 1.0")
    assert _metric(metrics, 'bastion_edge_model_available{model="Llama-3.1-8B-Instruct"}'
                   ).endswith(" 0.0")
    assert _metric(metrics, "bastion_edge_models_last_refresh_timestamp_seconds ").endswith(
        " 1234.0")
    text = generate_latest(metrics.registry).decode()
    assert 'model="bge-m3"' not in text  # only models the rules name


def test_failed_refresh_keeps_the_last_good_list_and_is_counted(
        sandbox: RunningSandbox, tmp_path: Path) -> None:
    metrics = Metrics()
    catalog = ModelCatalog(metrics)
    rules = _rules(sandbox)
    assert asyncio.run(catalog.refresh(rules, ENV, tmp_path))
    assert not asyncio.run(catalog.refresh(rules, {"QUBITTRON_API_KEY": "wrong-key"}, tmp_path))
    assert catalog.failures == 1
    assert catalog.available("gpt-oss-20b") is True
    unreachable = replace(rules, upstream=UpstreamRules(
        base_url="https://127.0.0.1:9/v1", ca_file=sandbox.ca_path))
    assert not asyncio.run(catalog.refresh(unreachable, ENV, tmp_path))
    assert catalog.available("gpt-oss-20b") is True
    assert _metric(metrics, "bastion_edge_models_refresh_failures_total ").endswith(" 2.0")


def test_no_key_set_is_a_failure_not_an_empty_list(
        sandbox: RunningSandbox, tmp_path: Path) -> None:
    catalog = ModelCatalog()
    assert not asyncio.run(catalog.refresh(_rules(sandbox), {}, tmp_path))
    assert catalog.available("gpt-oss-20b") is None


def test_marked_unavailable_until_the_next_good_refresh(
        sandbox: RunningSandbox, tmp_path: Path) -> None:
    metrics = Metrics()
    catalog = ModelCatalog(metrics)
    rules = _rules(sandbox)
    asyncio.run(catalog.refresh(rules, ENV, tmp_path))
    catalog.mark_unavailable("gpt-oss-120b")
    assert catalog.available("gpt-oss-120b") is False
    assert _metric(metrics, 'bastion_edge_model_available{model="gpt-oss-120b"}'
                   ).endswith(" 0.0")
    asyncio.run(catalog.refresh(rules, {"QUBITTRON_API_KEY": "wrong"}, tmp_path))
    assert catalog.available("gpt-oss-120b") is False  # a failed refresh keeps the mark
    asyncio.run(catalog.refresh(rules, ENV, tmp_path))
    assert catalog.available("gpt-oss-120b") is True


def test_background_refresh_sees_a_model_disappear_and_come_back(
        sandbox: RunningSandbox, admin: httpx.Client, tmp_path: Path) -> None:
    rules = _rules(sandbox, models_refresh_seconds=0.05)

    async def scenario() -> None:
        catalog = ModelCatalog()
        catalog.start(lambda: rules, ENV, tmp_path)
        try:
            await _until(lambda: catalog.available("gpt-oss-20b") is True)
            await asyncio.to_thread(admin.patch, "/sandbox/models/gpt-oss-20b",
                                    json={"available": False})
            await _until(lambda: catalog.available("gpt-oss-20b") is False)
            await asyncio.to_thread(admin.delete, "/sandbox/models")
            await _until(lambda: catalog.available("gpt-oss-20b") is True)
        finally:
            await catalog.stop()

    asyncio.run(scenario())


def test_rules_changed_refreshes_without_waiting_for_the_interval(
        sandbox: RunningSandbox, tmp_path: Path) -> None:
    current = [_rules(sandbox, models_refresh_seconds=3600.0)]
    current[0] = replace(current[0], upstream=UpstreamRules(
        base_url="https://127.0.0.1:9/v1", ca_file=sandbox.ca_path))

    async def scenario() -> None:
        catalog = ModelCatalog()
        catalog.start(lambda: current[0], ENV, tmp_path)
        try:
            await _until(lambda: catalog.failures == 1)
            current[0] = _rules(sandbox, models_refresh_seconds=3600.0)
            catalog.rules_changed()
            await _until(lambda: catalog.available("gpt-oss-20b") is True)
        finally:
            await catalog.stop()

    asyncio.run(scenario())


async def _until(predicate: object, attempts: int = 2000) -> None:
    for _ in range(attempts):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def test_per_key_lists_and_the_intersection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        ids = ["a", "b"] if key == "prod" else ["b", "c"]
        return httpx.Response(200, json={"object": "list",
                                         "data": [{"id": i, "object": "model"} for i in ids]})

    rules = (parse_rules("keys:\n  default_env: PROD\n  select:\n"
                                "    - {when: {client: 10.0.0.0/8}, env: STAGING}\n"))
    catalog = ModelCatalog(transport=httpx.MockTransport(handler))
    assert asyncio.run(catalog.refresh(rules, {"PROD": "prod", "STAGING": "st"}, Path("/")))
    assert catalog.available_models("PROD") == {"a", "b"}
    assert catalog.available_models("STAGING") == {"b", "c"}
    assert catalog.available_models() == {"b"}
    assert catalog.available_models("UNKNOWN") == {"b"}


@pytest.mark.parametrize("reply", [
    httpx.Response(200, json={"data": "nope"}),
    httpx.Response(200, json={"data": [{"name": "x"}]}),
    httpx.Response(200, json={"data": [{"id": 3}]}),
    httpx.Response(200, content=b"<html>"),
    httpx.Response(401, json={"error": {"code": "invalid_api_key"}}),
    httpx.Response(301, headers={"location": "http://example.invalid/"}),
])
def test_fetch_rejects_what_is_not_a_model_list(reply: httpx.Response) -> None:
    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: reply)
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(ModelListError) as info:
                await fetch_model_ids(client, "https://bastion.test/v1", "secret-key-123")
            assert "secret-key-123" not in str(info.value)

    asyncio.run(scenario())


def test_configured_keys_and_models() -> None:
    rules = replace(parse_rules(RULES_TEXT), key_rules=(
        KeyRule("STAGING", Condition()), KeyRule("QUBITTRON_API_KEY", Condition())))
    assert configured_keys(rules, {"QUBITTRON_API_KEY": " k ", "STAGING": ""}) == {
        "QUBITTRON_API_KEY": "k"}
    assert configured_bastion_models(rules) == (
        "Llama-3.1-8B-Instruct", "Qwen2.5-VL-72B-Instruct", "gpt-oss-120b", "gpt-oss-20b")
    assert configured_keys(rules, {}) == {}
