"""The planner's JSON body step: model ids (content-aware) and the Responses store flag,
over plain values (`plan_head` then `plan_body`), plus `rewrite_model_path`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion_edge.config.rules import Rules, load_rules, parse_rules
from bastion_edge.core.facts import (
    CHAT,
    EMBEDDINGS,
    IMAGES_GENERATIONS,
    MODELS,
    RESPONSES,
    RequestFacts,
)
from bastion_edge.core.model_map import ModelMap, Resolution
from bastion_edge.core.plan import REWRITE_MODEL, REWRITE_STORE
from bastion_edge.core.planner import IMAGES_DEFAULT_MODEL, Policy, plan_body, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.core.rewrite import rewrite_model_path
from bastion_edge.errors import ApiError

SHIPPED = load_rules(Path(__file__).resolve().parents[3] / "rules.yaml")
SHIPPED_MAP = ModelMap(SHIPPED)
SHIPPED_POLICY = Policy(SHIPPED, SHIPPED_MAP)
PATHS = {CHAT: "/v1/chat/completions", EMBEDDINGS: "/v1/embeddings",
         IMAGES_GENERATIONS: "/v1/images/generations", RESPONSES: "/v1/responses"}
ENV = {"QUBITTRON_API_KEY": "bk-test"}


@dataclass(frozen=True)
class Rewritten:
    body: bytes | None
    rewrites: tuple[str, ...]  # the body step's rewrites (not host and key)
    stream: bool
    resolution: Resolution | None
    facts: RequestFacts


def rewrite(body: object, endpoint: str = CHAT, *, rules: Rules = SHIPPED,
            is_create: bool = True, headers: dict[str, str] | None = None) -> Rewritten:
    """Plan a POST through both steps; a refusal is raised as the ApiError it answers."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = PATHS[endpoint] if is_create else f"{PATHS[endpoint]}/resp_1/cancel"
    policy = SHIPPED_POLICY if rules is SHIPPED else Policy.of(rules)
    head = RequestHead("https", "api.openai.com", "POST", path,
                       {"content-type": "application/json", **(headers or {})})
    plan = plan_head(head, policy, ENV)
    assert plan is not None and plan.refusal is None
    plan = plan_body(plan, ParsedBody(raw), policy, ENV)
    if plan.refusal is not None:
        raise plan.refusal
    return Rewritten(plan.body, tuple(r for r in plan.rewrites if r not in ("host", "key")),
                     plan.stream, plan.resolution, plan.facts)


def test_chat_model_mapped_and_other_fields_kept() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "h\u00e9llo"}],
            "temperature": 0.2, "stream": True}
    result = rewrite(body)
    assert result.body is not None
    new = json.loads(result.body)
    assert new == {**body, "model": "gpt-oss-120b",  # and the stream's usage (usage.stream_usage)
                   "stream_options": {"include_usage": True}}
    assert "h\u00e9llo".encode() in result.body  # not \u-escaped
    assert result.rewrites == (REWRITE_MODEL,)
    assert result.stream is True
    assert result.resolution is not None
    assert (result.resolution.requested, result.resolution.upstream) == ("gpt-4o", "gpt-oss-120b")


def test_vision_content_routes_to_vision_model() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    result = rewrite(body)
    assert json.loads(result.body)["model"] == "Qwen2.5-VL-72B-Instruct"
    assert result.facts.has_image is True


def test_long_prompt_routes_to_long_context_model() -> None:
    long_body = {"model": "gpt-4-turbo", "messages": [{"role": "user", "content": "x" * 96_004}]}
    short_body = {"model": "gpt-4-turbo", "messages": [{"role": "user", "content": "x" * 96_003}]}
    assert json.loads(rewrite(long_body).body)["model"] == "Meta-Llama-3_3-70B-Instruct"
    assert json.loads(rewrite(short_body).body)["model"] == "gpt-oss-120b"


def test_header_route_condition_uses_request_headers() -> None:
    body = {"model": "gpt-4o", "messages": []}
    result = rewrite(body, headers={"x-bastion-route": "coding"})
    assert json.loads(result.body)["model"] == "Qwen3-Coder-30B-A3B-Instruct"


@pytest.mark.parametrize("store", [None, True])
def test_responses_store_forced_false(store: bool | None) -> None:
    body: dict[str, object] = {"model": "gpt-4o-mini", "input": "hi"}
    if store is not None:
        body["store"] = store
    result = rewrite(body, RESPONSES)
    new = json.loads(result.body)
    assert new["store"] is False
    assert new["model"] == "gpt-oss-20b"
    assert result.rewrites == (REWRITE_MODEL, REWRITE_STORE)


def test_responses_store_false_left_alone() -> None:
    result = rewrite({"model": "gpt-oss-20b", "input": "hi", "store": False}, RESPONSES)
    assert result.body is None  # Bastion id and store already false: forwarded as is
    assert result.rewrites == ()


def test_store_not_forced_outside_responses_create() -> None:
    assert "store" not in json.loads(rewrite({"model": "gpt-4o", "messages": []}).body)
    not_create = rewrite({"model": "gpt-oss-20b", "input": "x"}, RESPONSES, is_create=False)
    assert not_create.body is None


def test_images_generations_model_injected_when_omitted() -> None:
    result = rewrite({"prompt": "a cat", "size": "256x256"}, IMAGES_GENERATIONS)
    new = json.loads(result.body)
    assert new == {"prompt": "a cat", "size": "256x256", "model": "FLUX.1-schnell"}
    assert result.resolution.requested == IMAGES_DEFAULT_MODEL == "dall-e-2"


def test_images_generations_model_injected_even_under_pass_through() -> None:
    rules = parse_rules("unmapped_models: pass_through\n")
    result = rewrite({"prompt": "a cat"}, IMAGES_GENERATIONS, rules=rules)
    assert json.loads(result.body)["model"] == "dall-e-2"


def test_model_omitted_elsewhere_not_injected() -> None:
    result = rewrite({"input": "x"}, EMBEDDINGS)
    assert result.body is None
    assert result.resolution is None


def test_unchanged_body_returns_none() -> None:
    raw = b'{"model": "bge-m3",   "input": "keep my spacing"}'
    result = rewrite(raw, EMBEDDINGS)
    assert result.body is None
    assert result.rewrites == ()
    assert result.resolution is None  # a Bastion id passes unmapped


def test_unmapped_model_rejected_naming_rules_source() -> None:
    with pytest.raises(ApiError) as info:
        rewrite({"model": "claude-3-opus", "messages": []})
    error = info.value
    assert error.status == 400
    assert error.code == "model_not_mapped"
    assert error.param == "model"
    assert "claude-3-opus" in error.message
    assert SHIPPED.source in error.message
    assert error.envelope()["error"]["type"] == "invalid_request_error"


def test_unmapped_model_passed_through_by_policy() -> None:
    rules = parse_rules("unmapped_models: pass_through\nmodels: {gpt-4o: gpt-oss-120b}\n")
    result = rewrite({"model": "claude-3-opus", "messages": []}, rules=rules)
    assert result.body is None
    assert result.resolution is None


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"model"', b"\xff\xfe"])
def test_invalid_json_is_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as info:
        rewrite(raw)
    assert info.value.status == 400
    assert info.value.code == "invalid_json"


def test_non_string_model_rejected() -> None:
    with pytest.raises(ApiError) as info:
        rewrite({"model": 4, "messages": []})
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_type", "model")


@pytest.mark.parametrize(
    ("path", "expected", "upstream"),
    [
        ("/v1/models/gpt-4o", "/v1/models/gpt-oss-120b", "gpt-oss-120b"),
        ("/v1/models/gpt-4o?x=1", "/v1/models/gpt-oss-120b?x=1", "gpt-oss-120b"),
        ("/v1/models/bge-m3", "/v1/models/bge-m3", None),
        ("/v1/models", "/v1/models", None),
        ("/v1/models/", "/v1/models/", None),
    ],
)
def test_model_path_mapping(path: str, expected: str, upstream: str | None) -> None:
    new_path, resolution = rewrite_model_path(path, RequestFacts(MODELS), SHIPPED, SHIPPED_MAP)
    assert new_path == expected
    assert (resolution.upstream if resolution else None) == upstream


def test_model_path_unmapped_rejected() -> None:
    with pytest.raises(ApiError, match="model_not_mapped"):
        rewrite_model_path("/v1/models/claude-3", RequestFacts(MODELS), SHIPPED, SHIPPED_MAP)
