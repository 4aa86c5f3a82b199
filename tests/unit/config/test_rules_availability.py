"""rules.yaml `fallbacks:`, `capabilities:` and `models_refresh_seconds`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_edge.config.rules import (
    DEFAULT_MODELS_REFRESH_SECONDS,
    ModelCapabilities,
    RulesError,
    load_rules,
    parse_rules,
)

SHIPPED_RULES = Path(__file__).resolve().parents[3] / "rules.yaml"


def _error(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    return info.value


def test_fallbacks_keep_order_and_accept_a_single_id() -> None:
    rules = parse_rules(
        "fallbacks:\n  gpt-oss-120b: [Meta-Llama-3_3-70B-Instruct, gpt-oss-20b]\n"
        "  gpt-oss-20b: Llama-3.1-8B-Instruct\n")
    assert rules.fallbacks == {
        "gpt-oss-120b": ("Meta-Llama-3_3-70B-Instruct", "gpt-oss-20b"),
        "gpt-oss-20b": ("Llama-3.1-8B-Instruct",),
    }


def test_capabilities_unlisted_fields_are_supported() -> None:
    rules = parse_rules(
        "capabilities:\n"
        "  Llama-3.1-8B-Instruct: {tools: false, json_schema: false, vision: false,"
        " context_tokens: 131072}\n"
        "  gpt-oss-120b: {vision: false}\n")
    assert rules.capabilities["Llama-3.1-8B-Instruct"] == ModelCapabilities(
        tools=False, json_schema=False, vision=False, context_tokens=131072)
    assert rules.capabilities["gpt-oss-120b"] == ModelCapabilities(vision=False)


def test_defaults_without_the_sections() -> None:
    rules = parse_rules("")
    assert rules.fallbacks == {} and rules.capabilities == {}
    assert rules.models_refresh_seconds == DEFAULT_MODELS_REFRESH_SECONDS
    assert parse_rules("models_refresh_seconds: 30").models_refresh_seconds == 30.0


@pytest.mark.parametrize(("text", "location", "message"), [
    ("fallbacks:\n  a: []\n", 'fallbacks.a', "expected a Bastion model id"),
    ("fallbacks:\n  a: [b, 3]\n", "fallbacks.a[1]", "expected a string"),
    ("fallbacks:\n  a: [b, a]\n", "fallbacks.a", "its own fallback"),
    ("fallbacks:\n  a: [b, b]\n", "fallbacks.a", "listed twice"),
    ("fallbacks: [a]\n", "fallbacks", "expected a mapping"),
    ("capabilities:\n  m: {tools: no-thanks}\n", "capabilities.m.tools", "true or false"),
    ("capabilities:\n  m: {streaming: false}\n", "capabilities.m.streaming", "unknown key"),
    ("capabilities:\n  m: {context_tokens: 0}\n", "capabilities.m.context_tokens",
     "positive integer"),
    ("capabilities:\n  m: true\n", "capabilities.m", "expected a mapping"),
    ("models_refresh_seconds: 0\n", "models_refresh_seconds", "positive number"),
])
def test_invalid_sections_name_their_location(text: str, location: str, message: str) -> None:
    error = _error(text)
    assert error.location == location
    assert message in str(error)
    assert error.line is not None


def test_shipped_rules_declare_the_guides_models_and_same_class_fallbacks() -> None:
    rules = load_rules(SHIPPED_RULES)
    targets = {c.use for m in rules.models for c in m.choices}
    chat_models = {"gpt-oss-120b", "gpt-oss-20b", "Llama-3.1-8B-Instruct",
                   "Meta-Llama-3_3-70B-Instruct", "Qwen3-Coder-30B-A3B-Instruct",
                   "Qwen2.5-VL-72B-Instruct"}
    assert chat_models <= set(rules.capabilities)
    assert rules.fallbacks["gpt-oss-20b"] == ("Llama-3.1-8B-Instruct",)
    assert rules.capabilities["Qwen2.5-VL-72B-Instruct"].vision
    for model, alternatives in rules.fallbacks.items():
        assert model in targets or model in chat_models
        assert set(alternatives) <= chat_models
