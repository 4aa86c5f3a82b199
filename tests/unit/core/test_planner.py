"""The planner over plain values: where a request goes, with which key and body, and why.

No proxy: a `RequestHead`, a `ParsedBody`, one rules snapshot in; one plan out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion_edge.config.rules import parse_rules
from bastion_edge.core import request as request_module
from bastion_edge.core.plan import (
    BodyStep,
    Decision,
    Destination,
    Plan,
    StoreAction,
)
from bastion_edge.core.planner import (
    Policy,
    form_model,
    history_wanted,
    plan_body,
    plan_head,
)
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.core.responses_request import History
from bastion_edge.errors import ApiError

SHIPPED_TEXT = (Path(__file__).resolve().parents[3] / "rules.yaml").read_text()
SHIPPED = Policy.of(parse_rules(SHIPPED_TEXT, "rules.yaml"))
BASTION_KEY = "bk-planner-test-key"
APP_KEY = "sk-app-key-never-upstream"
ENV = {"QUBITTRON_API_KEY": BASTION_KEY}
APP_HEADERS = {"authorization": f"Bearer {APP_KEY}", "openai-organization": "org-1",
               "content-type": "application/json"}


def head(path: str = "/v1/chat/completions", method: str = "POST", *,
         host: str = "api.openai.com", scheme: str = "https",
         headers: dict[str, str] | None = None, client: str = "10.1.2.3") -> RequestHead:
    return RequestHead(scheme, host, method, path, {**APP_HEADERS, **(headers or {})}, client)


def planned(path: str = "/v1/chat/completions", body: dict[str, Any] | None = None, *,
            policy: Policy = SHIPPED, environ: dict[str, str] = ENV,
            history: History | None = None, **kwargs: Any) -> Plan:
    first = plan_head(head(path, **kwargs), policy, environ)
    assert first is not None
    raw = json.dumps(body).encode() if body is not None else b""
    return plan_body(first, ParsedBody(raw), policy, environ, history)


def with_rules(extra: str) -> Policy:
    return Policy.of(parse_rules(SHIPPED_TEXT + "\n" + extra, "rules.yaml"))


def test_traffic_that_is_not_ours_gets_no_plan() -> None:
    assert plan_head(head(host="example.com"), SHIPPED, ENV) is None


def test_openai_chat_goes_to_bastion_with_its_key_never_the_apps() -> None:
    plan = planned(body={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    route = plan.route
    assert route.destination is Destination.BASTION and plan.decision is Decision.REWRITE
    assert route.target.url == "https://api.qubittron.ai/v1/chat/completions"
    assert route.put_headers == {"authorization": f"Bearer {BASTION_KEY}"}
    assert set(route.drop_headers) == {"authorization", "openai-organization"}
    assert plan.rewrites == ("host", "key", "model")
    assert (plan.original_model, plan.upstream_model) == ("gpt-4o", "gpt-oss-120b")
    assert plan.body is not None and json.loads(plan.body)["model"] == "gpt-oss-120b"


def test_explain_says_why_without_key_or_credentials() -> None:
    plan = planned(body={"model": "gpt-4o", "messages": []})
    text = json.dumps(plan.explain()) + repr(plan)
    assert BASTION_KEY not in text and APP_KEY not in text
    assert plan.explain()["destination"] == "bastion"
    assert plan.explain()["key_env"] == "QUBITTRON_API_KEY"


def test_bastion_traffic_over_http_is_upgraded_and_keeps_the_apps_key() -> None:
    plan = plan_head(head("/v1/models", "GET", host="api.qubittron.ai", scheme="http"),
                     SHIPPED, ENV)
    assert plan is not None and plan.decision is Decision.PASSTHROUGH
    assert plan.route.target.scheme == "https" and plan.route.drop_headers == ()
    assert plan.rewrites == ("https-upgrade",)


def test_missing_key_refused_at_the_head_and_held_without_credentials() -> None:
    plan = plan_head(head(), SHIPPED, {})
    assert plan is not None and plan.refusal is not None
    assert (plan.refusal.status, plan.refusal.code) == (401, "bastion_key_missing")
    assert plan.destination is Destination.PROXY and plan.decision_label == "refused"
    assert plan.route.put_headers == {} and "authorization" in plan.route.drop_headers


def test_unmapped_model_refused_and_the_refusal_holds_no_key() -> None:
    plan = planned(body={"model": "claude-3-opus", "messages": []})
    assert plan.refusal is not None and plan.refusal.code == "model_not_mapped"
    assert plan.original_model == "claude-3-opus"
    assert plan.route.put_headers == {}


def test_invalid_json_refused_and_body_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = request_module.json.loads
    monkeypatch.setattr(request_module.json, "loads",
                        lambda raw: calls.append(raw) or real(raw))
    first = plan_head(head(), SHIPPED, ENV)
    assert first is not None
    body = ParsedBody(b'{"model": "gpt-4o", "messages": []}')
    plan = plan_body(first, body, SHIPPED, ENV)
    assert plan.refusal is None and len(calls) == 1
    bad = plan_body(first, ParsedBody(b"{nope"), SHIPPED, ENV)
    assert bad.refusal is not None and bad.refusal.code == "invalid_json"


def test_speech_goes_to_the_tts_adapter_with_the_key_in_the_plan() -> None:
    plan = planned("/v1/audio/speech", {"model": "tts-1", "input": "hi", "voice": "alloy"})
    assert plan.route.destination is Destination.TTS and plan.destination.provider == "bastion"
    assert plan.key is not None and plan.key.key == BASTION_KEY
    assert plan.rewrites == ("host", "tts") and plan.body_step is BodyStep.NONE


@pytest.mark.parametrize(("method", "path", "action"), [
    ("GET", "/v1/responses/resp_1", StoreAction.RETRIEVE),
    ("DELETE", "/v1/responses/resp_1", StoreAction.DELETE),
    ("GET", "/v1/responses/resp_1/input_items?limit=2", StoreAction.INPUT_ITEMS),
    ("POST", "/v1/responses/resp_1/cancel", None),
])
def test_stored_responses_are_answered_by_the_proxy(method: str, path: str,
                                                    action: StoreAction | None) -> None:
    plan = plan_head(head(path, method), SHIPPED, ENV)
    assert plan is not None and plan.store_action is action
    expected = Destination.PROXY if action else Destination.BASTION
    assert plan.destination is expected
    if action:
        assert plan.response_id == "resp_1" and plan.route.put_headers == {}


def test_retrieve_as_a_stream_is_refused() -> None:
    plan = plan_head(head("/v1/responses/resp_1?stream=true", "GET"), SHIPPED, ENV)
    assert plan is not None and plan.refusal is not None
    assert (plan.refusal.code, plan.refusal.param) == ("unsupported_parameter", "stream")


def test_model_path_mapped_under_the_base_url() -> None:
    plan = plan_head(head("/v1/models/gpt-4o?x=1", "GET"), SHIPPED, ENV)
    assert plan is not None
    assert plan.route.target.path == "/v1/models/gpt-oss-120b?x=1"
    assert plan.rewrites == ("host", "key", "model")


def test_responses_create_forces_store_false_and_keeps_the_turn() -> None:
    plan = planned("/v1/responses", {"model": "gpt-4o", "input": "hi"})
    assert plan.body is not None and json.loads(plan.body)["store"] is False
    assert plan.rewrites == ("host", "key", "model", "store")
    assert plan.capture is not None and plan.capture.input_items[0]["content"] == "hi"
    private = planned("/v1/responses", {"model": "gpt-4o", "input": "hi", "store": False})
    assert private.capture is None and private.app_store is False


def test_history_is_expanded_before_the_model_is_chosen_once() -> None:
    image = {"type": "message", "role": "user",
             "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}]}
    history = History(("resp_0", "resp_1"), [image])
    body = {"model": "gpt-4o", "input": "and now?", "previous_response_id": "resp_1"}
    first = plan_head(head("/v1/responses"), SHIPPED, ENV)
    assert first is not None
    assert history_wanted(first, ParsedBody(json.dumps(body).encode())) == "resp_1"
    plan = planned("/v1/responses", body, history=history)
    assert plan.body is not None
    sent = json.loads(plan.body)
    assert "previous_response_id" not in sent and sent["input"][0] == image
    assert sent["model"] == "Qwen2.5-VL-72B-Instruct"  # the image earlier in the chain
    assert plan.upstream_model == "Qwen2.5-VL-72B-Instruct"
    assert plan.capture is not None and plan.capture.ancestors == ("resp_0", "resp_1")
    assert "expanded previous_response_id: 1 items" in plan.notes


def test_previous_response_id_must_be_a_string() -> None:
    first = plan_head(head("/v1/responses"), SHIPPED, ENV)
    assert first is not None
    with pytest.raises(ApiError, match="previous_response_id"):
        history_wanted(first, ParsedBody(b'{"model": "gpt-4o", "previous_response_id": 7}'))


def test_observe_goes_to_openai_as_sent_and_records_the_would_be_rewrite() -> None:
    policy = with_rules("cutover: {mode: observe}")
    plan = planned(body={"model": "gpt-4o", "messages": []}, policy=policy)
    assert plan.route.destination is Destination.OPENAI and plan.decision is Decision.OBSERVE
    assert plan.route.put_headers["authorization"] == f"Bearer {APP_KEY}"
    assert plan.body is None and plan.rewrites == ()
    assert "would rewrite: host,key,model" in plan.notes
    refused = planned(body={"model": "claude-3", "messages": []}, policy=policy)
    assert refused.refusal is None and "would refuse: model_not_mapped" in refused.notes


def test_mirror_copy_is_the_rewritten_body_unless_streaming_is_off() -> None:
    policy = with_rules("cutover: {mode: mirror, mirror_streaming: false}")
    plan = planned(body={"model": "gpt-4o", "messages": []}, policy=policy)
    assert plan.mirror_body is not None and json.loads(plan.mirror_body)["model"] == "gpt-oss-120b"
    assert plan.mirror_target is not None
    assert plan.mirror_target.url == "https://api.qubittron.ai/v1/chat/completions"
    assert plan.key is not None and plan.key.key == BASTION_KEY
    streamed = planned(body={"model": "gpt-4o", "messages": [], "stream": True}, policy=policy)
    assert streamed.mirror_body is None and streamed.mirror_skip == "streaming"
    other = planned("/v1/models", policy=policy, method="GET")
    assert other.mirror_skip == "not mirrored endpoint"


def test_split_by_conversation_holds_the_route_until_the_body_decides() -> None:
    policy = with_rules("cutover: {mode: split, split_percent: 50, sticky_by: conversation}")
    first = plan_head(head(), policy, ENV)
    assert first is not None and first.body_step is BodyStep.CONVERSATION
    assert first.route.destination is Destination.BASTION and first.route.put_headers == {}
    seen = set()
    for n in range(40):
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"topic {n}"}]}
        plan = plan_body(first, ParsedBody(json.dumps(body).encode()), policy, ENV)
        again = plan_body(first, ParsedBody(json.dumps(body).encode()), policy, ENV)
        assert plan.route == again.route  # sticky
        seen.add(plan.route.destination)
        if plan.route.destination is Destination.BASTION:
            assert plan.route.put_headers == {"authorization": f"Bearer {BASTION_KEY}"}
        else:
            assert plan.route.put_headers["authorization"] == f"Bearer {APP_KEY}"
    assert seen == {Destination.BASTION, Destination.OPENAI}


def test_large_form_streams_and_its_model_is_decided_as_it_passes() -> None:
    headers = {"content-type": "multipart/form-data; boundary=abc", "content-length": "9999999"}
    plan = plan_head(head("/v1/audio/transcriptions", headers=headers), SHIPPED, ENV)
    assert plan is not None and plan.body_step is BodyStep.STREAMED_FORM
    mapped = form_model(plan, SHIPPED, b"whisper-1", streaming=True)
    assert mapped.value == b"whisper-large-v3" and "model" in mapped.plan.rewrites
    kept = form_model(plan, SHIPPED, b"claude-3", streaming=True)
    assert kept.value == b"claude-3"
    assert kept.plan.notes == ("streamed upload kept unmapped model: model_not_mapped",)
    with pytest.raises(ApiError):
        form_model(plan, SHIPPED, b"claude-3", streaming=False)


def test_small_form_has_its_model_replaced_byte_exact() -> None:
    boundary = "b0undary"
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
           f"\r\n\x00\x01audio\r\n--{boundary}--\r\n").encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}",
               "content-length": str(len(raw))}
    first = plan_head(head("/v1/audio/transcriptions", headers=headers), SHIPPED, ENV)
    assert first is not None and first.body_step is BodyStep.FORM
    plan = plan_body(first, ParsedBody(raw), SHIPPED, ENV)
    assert plan.body == raw.replace(b"whisper-1", b"whisper-large-v3")
    assert plan.upstream_model == "whisper-large-v3"


def test_app_identity_is_a_condition_a_partition_and_the_split_key() -> None:
    policy = with_rules("""
clients:
  apps:
    - name: billing
      secret_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      bastion_key_env: QUBITTRON_API_KEY_BILLING
""")
    env = {**ENV, "QUBITTRON_API_KEY_BILLING": "bk-billing"}
    billing = head()._replace(app="billing")
    plan = plan_head(billing, policy, env)
    assert plan is not None and plan.key is not None
    assert (plan.key.env, plan.key.key) == ("QUBITTRON_API_KEY_BILLING", "bk-billing")
    assert plan.partition == "app:billing" and plan.facts.app == "billing"
    keyless = plan_head(head(headers={"authorization": ""})._replace(
        headers={"content-type": "application/json"}), policy, env)
    assert keyless is not None and keyless.partition == "client:10.1.2.3"


def test_metrics_label_only_declared_apps() -> None:
    from bastion_edge.telemetry.metrics import Metrics

    metrics = Metrics()
    metrics.rules_loaded(with_rules("""
clients:
  apps:
    - name: billing
      secret_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
""").rules, 0.0)
    assert [metrics.app_label(a) for a in ("billing", "intruder", None)] == \
        ["billing", "other", "none"]
