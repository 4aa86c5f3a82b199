"""Files/Batch API requests in the planner, and batch lines through the live decision
path (plain values, no proxy)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bastion_edge.batch.batch_shapes import BatchLine
from bastion_edge.batch.batch_store import Creator
from bastion_edge.batch.lines import plan_line
from bastion_edge.config.rules import RulesError, parse_rules
from bastion_edge.core.plan import BatchAction, Destination
from bastion_edge.core.planner import Policy, plan_head
from bastion_edge.core.request import RequestHead

SHIPPED_TEXT = (Path(__file__).resolve().parents[3] / "rules.yaml").read_text()
SHIPPED = Policy.of(parse_rules(SHIPPED_TEXT, "rules.yaml"))
APP_KEY = "sk-app-batch-key"
APP_HASH = hashlib.sha256(APP_KEY.encode()).hexdigest()
ENV = {"QUBITTRON_API_KEY": "bk-default", "KEY_STAGING": "bk-staging"}
CREATOR = Creator(APP_HASH, None, "10.1.2.3", APP_HASH)


def head(path: str, method: str) -> RequestHead:
    return RequestHead("https", "api.openai.com", method, path,
                       {"authorization": f"Bearer {APP_KEY}"}, "10.1.2.3")


@pytest.mark.parametrize(("method", "path", "action", "resource"), [
    ("POST", "/v1/files", BatchAction.FILE_CREATE, None),
    ("GET", "/v1/files?purpose=batch", BatchAction.FILE_LIST, None),
    ("GET", "/v1/files/file-abc", BatchAction.FILE_RETRIEVE, "file-abc"),
    ("GET", "/v1/files/file-abc/content", BatchAction.FILE_CONTENT, "file-abc"),
    ("DELETE", "/v1/files/file-abc", BatchAction.FILE_DELETE, "file-abc"),
    ("POST", "/v1/batches", BatchAction.BATCH_CREATE, None),
    ("GET", "/v1/batches?limit=5", BatchAction.BATCH_LIST, None),
    ("GET", "/v1/batches/batch_1", BatchAction.BATCH_RETRIEVE, "batch_1"),
    ("POST", "/v1/batches/batch_1/cancel", BatchAction.BATCH_CANCEL, "batch_1"),
])
def test_files_and_batches_are_answered_by_the_proxy(
    method: str, path: str, action: BatchAction, resource: str | None
) -> None:
    plan = plan_head(head(path, method), SHIPPED, ENV)
    assert plan is not None and plan.refusal is None
    assert plan.batch_action is action and plan.resource_id == resource
    assert plan.destination is Destination.BATCH and plan.destination.provider == "proxy"
    assert plan.route.put_headers == {}  # no Bastion key travels to the batch server
    assert "authorization" in plan.route.drop_headers
    assert plan.partition == APP_HASH
    assert plan.explain()["batch_action"] == action.value


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/v1/files"), ("POST", "/v1/files/file-1/content"),
    ("DELETE", "/v1/batches/b"), ("GET", "/v1/batches/b/cancel/x"),
])
def test_unknown_file_and_batch_routes_are_refused_404(method: str, path: str) -> None:
    plan = plan_head(head(path, method), SHIPPED, ENV)
    assert plan is not None and plan.refusal is not None
    assert plan.refusal.status == 404 and plan.destination is Destination.PROXY


def test_observe_mode_leaves_files_and_batches_to_openai() -> None:
    policy = Policy.of(parse_rules(SHIPPED_TEXT + "\ncutover: {mode: observe}\n"))
    plan = plan_head(head("/v1/batches", "POST"), policy, ENV)
    assert plan is not None and plan.batch_action is None
    assert plan.destination is Destination.OPENAI


def line(body: dict[str, object]) -> BatchLine:
    return BatchLine(1, "c-1", body)


def test_a_line_gets_the_live_plan_model_and_key() -> None:
    plan, body = plan_line(line({"model": "text-embedding-3-small", "input": "x"}),
                           "/v1/embeddings", CREATOR, SHIPPED, ENV)
    assert plan is not None and plan.refusal is None
    assert plan.destination is Destination.BASTION
    assert plan.upstream_model == "bge-m3" and b'"model":"bge-m3"' in body
    assert plan.route.put_headers == {"authorization": "Bearer bk-default"}
    assert plan.route.target.path.endswith("/embeddings")
    assert "batch line" in plan.notes


def test_a_line_is_keyed_by_its_creators_key_hash() -> None:
    policy = Policy.of(parse_rules(
        SHIPPED_TEXT.replace("keys:\n", "keys:\n  select:\n"
                             f"    - when: {{app_key_sha256: '{APP_HASH[:16]}'}}\n"
                             "      env: KEY_STAGING\n", 1)))
    plan, _ = plan_line(line({"model": "gpt-4o", "messages": []}), "/v1/chat/completions",
                        CREATOR, policy, ENV)
    assert plan is not None and plan.route.put_headers["authorization"] == "Bearer bk-staging"
    stranger = Creator("other", None, "10.9.9.9", "0" * 64)
    plan, _ = plan_line(line({"model": "gpt-4o", "messages": []}), "/v1/chat/completions",
                        stranger, policy, ENV)
    assert plan is not None and plan.route.put_headers["authorization"] == "Bearer bk-default"


def test_a_line_is_refused_as_a_live_request_would_be() -> None:
    plan, _ = plan_line(line({"model": "no-such-model", "messages": []}),
                        "/v1/chat/completions", CREATOR, SHIPPED, ENV)
    assert plan is not None and plan.refusal is not None and plan.refusal.status == 400
    plan, _ = plan_line(line({"model": "gpt-4o", "messages": [], "stream": True}),
                        "/v1/chat/completions", CREATOR, SHIPPED, ENV)
    assert plan is not None and plan.refusal is not None and plan.refusal.param == "stream"


def test_a_line_bound_for_openai_is_refused() -> None:
    policy = Policy.of(parse_rules(SHIPPED_TEXT + "\ncutover: {mode: observe}\n"))
    plan, _ = plan_line(line({"model": "gpt-4o", "messages": []}), "/v1/chat/completions",
                        CREATOR, policy, ENV)
    assert plan is not None and plan.refusal is not None
    assert plan.refusal.code == "batch_line_not_for_bastion"


def test_responses_lines_get_store_false() -> None:
    plan, body = plan_line(line({"model": "gpt-4o", "input": "hi"}), "/v1/responses",
                           CREATOR, SHIPPED, ENV)
    assert plan is not None and plan.refusal is None and b'"store":false' in body


def test_batches_rules_parse_and_name_bad_locations() -> None:
    rules = parse_rules("batches:\n  concurrency: 3\n  requests_per_minute: 600\n"
                        "  max_file_bytes: 1000\n  store: redis://r:6379/1\n"
                        "  encryption_key_env: BATCH_KEY\n")
    batches = rules.batches
    assert (batches.concurrency, batches.requests_per_minute, batches.max_file_bytes,
            batches.store, batches.encryption_key_env) == (3, 600, 1000, "redis://r:6379/1",
                                                           "BATCH_KEY")
    assert parse_rules("").batches.requests_per_minute is None
    for bad, where in (("concurrency: 0", "batches.concurrency"),
                       ("store: ftp://x", "batches.store"),
                       ("max_lines: 2.5", "batches.max_lines"),
                       ("speed: 3", "batches.speed")):
        with pytest.raises(RulesError, match=where.replace(".", r"\.")):
            parse_rules(f"batches:\n  {bad}\n")
