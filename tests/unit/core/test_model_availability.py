"""The pure selection core: fallbacks, capabilities, the live list, the 404 retry."""

from __future__ import annotations

import json

import pytest

from bastion_edge.config.rules import ModelCapabilities
from bastion_edge.core.facts import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from bastion_edge.core.model_availability import (
    CAPABILITY_UNSUPPORTED,
    NO_NEEDS,
    Candidates,
    CapabilityRefusal,
    RequestNeeds,
    fallback_chain,
    is_model_not_found,
    needs_from_json,
    refusal_error,
    select_candidates,
)

SMALL = "Llama-3.1-8B-Instruct"
MID = "gpt-oss-20b"
BIG = "gpt-oss-120b"
LONG = "Meta-Llama-3_3-70B-Instruct"
FALLBACKS = {MID: (SMALL, BIG), SMALL: (MID,), BIG: (LONG,)}
CAPS = {
    SMALL: ModelCapabilities(tools=False, json_schema=False, vision=False, context_tokens=8000),
    MID: ModelCapabilities(vision=False, context_tokens=32000),
    BIG: ModelCapabilities(json_schema=False, vision=False),
}
TOOLS = RequestNeeds(tools_param="tools")
SCHEMA = RequestNeeds(json_schema_param="response_format")


def _select(target: str, needs: RequestNeeds = NO_NEEDS, available: set[str] | None = None,
            max_attempts: int = 3) -> Candidates | CapabilityRefusal:
    return select_candidates(target, needs, CAPS, FALLBACKS, available, max_attempts)


def test_fallback_chain_is_target_first_deduplicated_not_transitive() -> None:
    assert fallback_chain(MID, FALLBACKS) == (MID, SMALL, BIG)
    assert fallback_chain(BIG, FALLBACKS) == (BIG, LONG)
    assert fallback_chain("unknown", FALLBACKS) == ("unknown",)
    assert fallback_chain(SMALL, {SMALL: (MID, SMALL, MID)}) == (SMALL, MID)


def test_unknown_list_keeps_the_whole_chain_in_order() -> None:
    assert _select(MID) == Candidates((MID, SMALL, BIG))


def test_unlisted_target_is_never_first_its_first_listed_fallback_is() -> None:
    result = _select(MID, available={SMALL, BIG})
    assert isinstance(result, Candidates)
    assert result.models == (SMALL, BIG)
    assert result.first == SMALL
    assert result.skipped == ((MID, "unlisted"),)
    assert not result.none_listed


def test_attempts_are_bounded() -> None:
    result = _select(MID, max_attempts=2)
    assert isinstance(result, Candidates) and result.models == (MID, SMALL)
    one = _select(MID, max_attempts=0)
    assert isinstance(one, Candidates) and one.models == (MID,)


def test_tools_request_skips_the_model_without_tools() -> None:
    result = _select(SMALL, TOOLS)
    assert isinstance(result, Candidates)
    assert result.models == (MID,)
    assert result.skipped == ((SMALL, "tools"),)


def test_capability_and_availability_skips_are_reported_in_chain_order() -> None:
    result = _select(MID, TOOLS, available={BIG})
    assert isinstance(result, Candidates)
    assert result.models == (BIG,)
    assert result.skipped == ((MID, "unlisted"), (SMALL, "tools"))


def test_no_model_with_the_capability_is_a_refusal_naming_the_field() -> None:
    result = _select(SMALL, SCHEMA)  # SMALL lacks json_schema, its fallback MID has it
    assert isinstance(result, Candidates) and result.models == (MID,)
    refusal = _select(BIG, SCHEMA)  # BIG lacks it; LONG has no entry = supported
    assert isinstance(refusal, Candidates) and refusal.models == (LONG,)
    caps = {**CAPS, LONG: ModelCapabilities(json_schema=False)}
    refused = select_candidates(BIG, SCHEMA, caps, FALLBACKS, None)
    assert isinstance(refused, CapabilityRefusal)
    assert refused.param == "response_format"
    assert refused.capability == "json_schema"
    assert refused.code == CAPABILITY_UNSUPPORTED
    assert BIG in refused.message and LONG in refused.message
    error = refusal_error(refused).envelope()["error"]
    assert refusal_error(refused).status == 400
    assert error["code"] == "model_capability_unsupported"
    assert error["param"] == "response_format"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("needs", "param", "capability"), [
    (RequestNeeds(tools_param="functions"), "functions", "tools"),
    (RequestNeeds(json_schema_param="text.format", input_param="input"), "text.format",
     "json_schema"),
    (RequestNeeds(vision=True, input_param="input"), "input", "vision"),
    (RequestNeeds(prompt_tokens=9000), "messages", "context_tokens"),
])
def test_refusal_param_per_need(needs: RequestNeeds, param: str, capability: str) -> None:
    refused = select_candidates(SMALL, needs, CAPS, {}, None)
    assert isinstance(refused, CapabilityRefusal)
    assert (refused.param, refused.capability) == (param, capability)


def test_refusal_is_decided_before_availability() -> None:
    refused = select_candidates(SMALL, TOOLS, CAPS, {}, available=set())
    assert isinstance(refused, CapabilityRefusal) and refused.param == "tools"


def test_context_size_routes_to_the_larger_window() -> None:
    result = _select(SMALL, RequestNeeds(prompt_tokens=20_000))
    assert isinstance(result, Candidates) and result.models == (MID,)
    exactly = _select(SMALL, RequestNeeds(prompt_tokens=8000))
    assert isinstance(exactly, Candidates) and exactly.first == SMALL


def test_refusal_names_the_need_no_model_meets_even_if_the_target_fails_another_first() -> None:
    caps = {SMALL: ModelCapabilities(tools=False, vision=False),
            MID: ModelCapabilities(vision=False)}
    refused = select_candidates(
        SMALL, RequestNeeds(tools_param="tools", vision=True), caps, {SMALL: (MID,)}, None)
    assert isinstance(refused, CapabilityRefusal)
    assert refused.param == "messages" and refused.capability == "vision"


def test_needs_met_only_separately_refuse_with_the_targets_first_gap() -> None:
    caps = {SMALL: ModelCapabilities(tools=False), MID: ModelCapabilities(vision=False)}
    refused = select_candidates(
        SMALL, RequestNeeds(tools_param="tools", vision=True), caps, {SMALL: (MID,)}, None)
    assert isinstance(refused, CapabilityRefusal)
    assert refused.param == "tools"


def test_nothing_listed_tries_the_capable_chain_anyway() -> None:
    result = _select(SMALL, TOOLS, available={"something-else"})
    assert isinstance(result, Candidates)
    assert result.models == (MID,)
    assert result.none_listed


# ------------------------------------------------------------------ needs_from_json

def test_chat_needs() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x" * 400},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
    }
    needs = needs_from_json(CHAT, body)
    assert needs == RequestNeeds(tools_param="tools", json_schema_param="response_format",
                                 vision=True, prompt_tokens=100, input_param="messages")


def test_chat_legacy_functions_and_plain_json_mode() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}],
            "functions": [{"name": "f"}], "response_format": {"type": "json_object"}}
    needs = needs_from_json(CHAT, body)
    assert needs.tools_param == "functions"
    assert needs.json_schema_param is None
    assert not needs.vision


def test_empty_tools_list_is_not_a_need() -> None:
    assert needs_from_json(CHAT, {"messages": [], "tools": []}).tools_param is None


def test_responses_needs() -> None:
    body = {"input": [{"role": "user", "content": [
                {"type": "input_text", "text": "hello"},
                {"type": "input_image", "image_url": "https://example.com/a.png"}]}],
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}},
            "response_format": {"type": "json_schema"}}
    needs = needs_from_json(RESPONSES, body)
    assert needs.tools_param == "tools"
    assert needs.json_schema_param == "text.format"
    assert needs.vision
    assert needs.input_param == "input"


def test_completions_needs_only_prompt_size() -> None:
    needs = needs_from_json(COMPLETIONS, {"prompt": "y" * 4000, "tools": [{"x": 1}]})
    assert needs == RequestNeeds(prompt_tokens=1000, input_param="prompt")


def test_other_endpoints_need_nothing() -> None:
    assert needs_from_json(EMBEDDINGS, {"input": "x" * 10_000}) == NO_NEEDS


# ------------------------------------------------------------------ the 404 retry

def _envelope(code: str | None) -> bytes:
    return json.dumps({"error": {"message": "m", "type": "invalid_request_error",
                                 "param": "model", "code": code}}).encode()


def test_model_not_found_404_is_retryable() -> None:
    assert is_model_not_found(404, _envelope("model_not_found"))


@pytest.mark.parametrize(("status", "body"), [
    (404, _envelope("unknown_url")),
    (404, _envelope(None)),
    (400, _envelope("model_not_found")),
    (502, _envelope("model_not_found")),
    (404, b""),
    (404, b"<html>not found</html>"),
    (404, b"\xff\xfe"),
    (404, b"[]"),
    (404, b'{"error": "model_not_found"}'),
])
def test_anything_else_passes_through(status: int, body: bytes) -> None:
    assert not is_model_not_found(status, body)
