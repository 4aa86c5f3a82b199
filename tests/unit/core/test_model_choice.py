"""The planner's model choice over plain values: the live list (a snapshot passed in),
fallbacks and capabilities decide the model sent first and the ones left for a retry;
the retry bodies keep every byte but the model."""

from __future__ import annotations

import json
from collections.abc import Mapping

from bastion_edge.config.rules import parse_rules
from bastion_edge.core.model_choice import retried_on, with_model_form, with_model_json
from bastion_edge.core.plan import REWRITE_MODEL, Plan
from bastion_edge.core.planner import Policy, form_model, plan_body, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.proxy.fallback import holds, retry_body

ENV = {"QUBITTRON_API_KEY": "bk-test"}
POLICY = Policy.of(parse_rules("""
models:
  gpt-4o-mini: gpt-oss-20b
  gpt-4o: gpt-oss-120b
  whisper-1: whisper-large-v3
  o3: plain-model
fallbacks:
  gpt-oss-20b: [Llama-3.1-8B-Instruct, gpt-oss-120b]
  gpt-oss-120b: [Meta-Llama-3_3-70B-Instruct]
  whisper-large-v3: [whisper-large-v3-turbo]
capabilities:
  gpt-oss-20b: {json_schema: false}
  Llama-3.1-8B-Instruct: {tools: false, json_schema: false}
  gpt-oss-120b: {vision: false}
  Meta-Llama-3_3-70B-Instruct: {vision: false}
"""))
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


def plan_of(body: Mapping[str, object] | bytes, available: frozenset[str] | None,
            path: str = "/v1/chat/completions",
            content_type: str = "application/json") -> Plan:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = RequestHead("https", "api.openai.com", "POST", path,
                       {"content-type": content_type, "content-length": str(len(raw))})
    first = plan_head(head, POLICY, ENV)
    assert first is not None
    return plan_body(first, ParsedBody(raw), POLICY, ENV, available=available)


def chat(model: str = "gpt-4o-mini", **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


def sent_model(plan: Plan) -> object:
    assert plan.body is not None
    return json.loads(plan.body)["model"]


def test_a_listed_target_is_sent_with_its_fallbacks_kept_for_a_retry() -> None:
    plan = plan_of(chat(), frozenset({"gpt-oss-20b", "Llama-3.1-8B-Instruct", "gpt-oss-120b"}))
    assert plan.upstream_model == "gpt-oss-20b" and sent_model(plan) == "gpt-oss-20b"
    assert plan.fallback_models == ("Llama-3.1-8B-Instruct", "gpt-oss-120b")
    assert plan.refusal is None


def test_an_unlisted_target_is_replaced_by_its_first_listed_fallback() -> None:
    plan = plan_of(chat(), frozenset({"Llama-3.1-8B-Instruct", "gpt-oss-120b"}))
    assert plan.upstream_model == "Llama-3.1-8B-Instruct"
    assert sent_model(plan) == "Llama-3.1-8B-Instruct"
    assert plan.original_model == "gpt-4o-mini" and REWRITE_MODEL in plan.rewrites
    assert plan.fallback_models == ("gpt-oss-120b",)
    assert "model gpt-oss-20b skipped: not listed by Bastion" in plan.notes
    assert plan.resolution is not None and plan.resolution.upstream == "Llama-3.1-8B-Instruct"


def test_no_list_read_yet_means_the_target_is_sent() -> None:
    plan = plan_of(chat(), None)
    assert plan.upstream_model == "gpt-oss-20b"
    assert plan.fallback_models == ("Llama-3.1-8B-Instruct", "gpt-oss-120b")


def test_nothing_listed_tries_the_chain_anyway_and_says_so() -> None:
    plan = plan_of(chat(), frozenset())
    assert plan.upstream_model == "gpt-oss-20b"
    assert any("trying gpt-oss-20b anyway" in n for n in plan.notes)


def test_tools_go_to_the_first_fallback_that_has_them() -> None:
    plan = plan_of(chat(tools=TOOLS), None)
    assert plan.upstream_model == "gpt-oss-20b"  # 20b has tools; Llama does not
    assert plan.fallback_models == ("gpt-oss-120b",)
    assert "model Llama-3.1-8B-Instruct skipped: lacks tool calling" in plan.notes


def test_json_schema_skips_models_without_it() -> None:
    plan = plan_of(chat(response_format=SCHEMA), None)
    assert plan.upstream_model == "gpt-oss-120b" and sent_model(plan) == "gpt-oss-120b"
    assert plan.fallback_models == ()


def test_no_model_with_the_capability_is_a_400_naming_the_field() -> None:
    image = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    plan = plan_of({"model": "gpt-4o", "messages": image}, None)
    assert plan.refusal is not None
    assert plan.refusal.status == 400 and plan.refusal.code == "model_capability_unsupported"
    assert plan.refusal.param == "messages"
    assert plan.original_model == "gpt-4o"


def test_functions_name_their_own_param() -> None:
    rules = parse_rules("""
models: {gpt-4o-mini: Llama-3.1-8B-Instruct}
capabilities: {Llama-3.1-8B-Instruct: {tools: false}}
""")
    head = RequestHead("https", "api.openai.com", "POST", "/v1/chat/completions",
                       {"content-type": "application/json"})
    policy = Policy.of(rules)
    first = plan_head(head, policy, ENV)
    assert first is not None
    body = json.dumps(chat(functions=[{"name": "f", "parameters": {}}])).encode()
    plan = plan_body(first, ParsedBody(body), policy, ENV)
    assert plan.refusal is not None and plan.refusal.param == "functions"


def test_a_model_outside_fallbacks_and_capabilities_is_left_alone() -> None:
    plan = plan_of(chat("o3"), frozenset({"something-else"}))
    assert plan.upstream_model == "plain-model" and plan.fallback_models == ()
    assert not [n for n in plan.notes if "skipped" in n]


def test_a_small_form_falls_back_and_keeps_the_rest_for_a_retry() -> None:
    boundary = "b0undary"
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
           f"\r\n\x00\x01audio\r\n--{boundary}--\r\n").encode()
    listed = plan_of(raw, None, "/v1/audio/transcriptions",
                     f"multipart/form-data; boundary={boundary}")
    assert listed.upstream_model == "whisper-large-v3"
    assert listed.fallback_models == ("whisper-large-v3-turbo",)
    gone = plan_of(raw, frozenset({"whisper-large-v3-turbo"}), "/v1/audio/transcriptions",
                   f"multipart/form-data; boundary={boundary}")
    assert gone.body == raw.replace(b"whisper-1", b"whisper-large-v3-turbo")
    assert gone.upstream_model == "whisper-large-v3-turbo" and gone.fallback_models == ()


def test_a_streamed_form_falls_back_but_keeps_nothing_to_replay() -> None:
    head = RequestHead("https", "api.openai.com", "POST", "/v1/audio/transcriptions",
                       {"content-type": "multipart/form-data; boundary=abc",
                        "content-length": "9999999"})
    plan = plan_head(head, POLICY, ENV)
    assert plan is not None
    decided = form_model(plan, POLICY, b"whisper-1", streaming=True,
                         available=frozenset({"whisper-large-v3-turbo"}))
    assert decided.value == b"whisper-large-v3-turbo"
    assert decided.plan.fallback_models == ()


def test_json_retry_body_changes_only_the_model_bytes() -> None:
    body = b'{ "messages" : [{"role":"user","content":"\\u00e9 1.0e5"}],\n "model" : "a",\t"x":1 }'
    assert with_model_json(body, "b/\u00e9") == body.replace(b'"a"', '"b/\u00e9"'.encode())
    assert with_model_json(b'{"x":{"model":"a"}}', "b") is None  # only the top level
    assert with_model_json(b'[1]', "b") is None
    assert with_model_json(b'{"model":"a"', "b") is None
    assert with_model_json(b'\xff', "b") is None


def test_form_retry_body_changes_only_the_model_field() -> None:
    raw = (b"--xx\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nold\r\n"
           b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
           b"\r\nbytes\r\n--xx--\r\n")
    assert with_model_form(raw, b"xx", "new") == raw.replace(b"\r\nold\r\n", b"\r\nnew\r\n")
    assert with_model_form(raw.replace(b'"model"', b'"other"'), b"xx", "new") is None


def test_a_retry_moves_the_plan_to_the_next_fallback_and_says_why() -> None:
    plan = plan_of(chat(), None)
    retried = retried_on(plan, "Llama-3.1-8B-Instruct")
    assert retried.upstream_model == "Llama-3.1-8B-Instruct"
    assert retried.fallback_models == ("gpt-oss-120b",)
    assert retried.resolution is not None
    assert retried.resolution.upstream == "Llama-3.1-8B-Instruct"
    assert retried.notes[-1] == ("404 model_not_found from gpt-oss-20b: retried on "
                                 "Llama-3.1-8B-Instruct")
    assert retried_on(retried, "gpt-oss-120b").fallback_models == ()


def test_only_a_404_of_a_replayable_body_with_fallbacks_is_held() -> None:
    plan = plan_of(chat(), None)
    assert holds(plan, 404)
    assert not holds(plan, 502) and not holds(plan, 200)
    assert not holds(plan_of(chat("o3"), None), 404)  # no fallbacks
    assert retry_body(plan, b'{"model":"gpt-oss-20b","x":1}', "m") == b'{"model":"m","x":1}'
