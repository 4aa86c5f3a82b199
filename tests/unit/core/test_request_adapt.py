"""Fields adapted for Bastion: reasoning-only fields, embedding dimensions."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bastion_edge.config.rules import Rules, RulesError, parse_rules
from bastion_edge.core.embedding_dims import DEFAULT_DIMENSIONS, size_change_warnings
from bastion_edge.core.reasoning_fields import adapt_reasoning_fields
from bastion_edge.core.request_adapt import adapt_for_bastion
from bastion_edge.errors import ApiError


def test_max_completion_tokens_becomes_max_tokens() -> None:
    body: dict[str, Any] = {"max_completion_tokens": 50}
    assert adapt_reasoning_fields(body, "Llama-3.1-8B-Instruct") == [
        "max_completion_tokens -> max_tokens"]
    assert body == {"max_tokens": 50}
    both: dict[str, Any] = {"max_completion_tokens": 50, "max_tokens": 20}
    adapt_reasoning_fields(both, "gpt-oss-20b")
    assert both == {"max_tokens": 20}


@pytest.mark.parametrize(("effort", "kept"), [("minimal", "low"), ("high", "high"),
                                              ("xhigh", "high"), ("none", "low")])
def test_reasoning_effort_kept_for_models_that_reason(effort: str, kept: str) -> None:
    chat: dict[str, Any] = {"reasoning_effort": effort}
    adapt_reasoning_fields(chat, "gpt-oss-120b")
    assert chat == {"reasoning_effort": kept}
    responses: dict[str, Any] = {"reasoning": {"effort": effort, "summary": "auto"}}
    adapt_reasoning_fields(responses, "gpt-oss-20b")
    assert responses == {"reasoning": {"effort": kept}}


def test_reasoning_fields_dropped_for_models_that_do_not_reason() -> None:
    body: dict[str, Any] = {"reasoning_effort": "low", "reasoning": {"effort": "low"}}
    notes = adapt_reasoning_fields(body, "Qwen3-Coder-30B-A3B-Instruct")
    assert body == {} and len(notes) == 2
    assert adapt_reasoning_fields({"temperature": 1}, "gpt-oss-20b") == []


def test_dimensions_honoured_only_at_the_targets_native_size() -> None:
    rules = Rules()
    native: dict[str, Any] = {"input": "x", "dimensions": 1024}
    done = adapt_for_bastion(native, "embeddings", "text-embedding-3-small", "bge-m3", rules)
    assert native == {"input": "x"} and done.rewrites == ["fields"]
    with pytest.raises(ApiError) as raised:
        adapt_for_bastion({"input": "x", "dimensions": 1536}, "embeddings",
                          "text-embedding-3-small", "bge-m3", rules)
    error = raised.value
    assert (error.status, error.code, error.param) == (400, "dimensions_not_supported",
                                                       "dimensions")
    assert "1024" in error.message and "1536" in error.message and "bge-m3" in error.message


def test_token_ids_decoded_in_the_adapted_body() -> None:
    body: dict[str, Any] = {"input": [[15339, 1917]]}
    done = adapt_for_bastion(body, "embeddings", "text-embedding-3-small", "bge-m3", Rules())
    assert body == {"input": ["hello world"]} and done.rewrites == ["token-ids"]


def test_sizes_are_rules_data_and_check_warns_on_a_change() -> None:
    rules = parse_rules("embedding_dimensions:\n  my-embedder: 768\n")
    assert rules.embedding_dimensions == {**DEFAULT_DIMENSIONS, "my-embedder": 768}
    expected = re.escape('embedding_dimensions."bge-m3": expected a positive')
    with pytest.raises(RulesError, match=expected):
        parse_rules("embedding_dimensions:\n  bge-m3: many\n")
    warnings = size_change_warnings(
        [("text-embedding-3-*", ["bge-m3"]), ("text-embedding-ada-002", ["my-embedder"])],
        {**DEFAULT_DIMENSIONS, "my-embedder": 1536})
    assert warnings == [
        "warning: text-embedding-3-small (1536 dimensions) -> bge-m3 (1024 dimensions): "
        "vectors change size; re-embed stored vectors",
        "warning: text-embedding-3-large (3072 dimensions) -> bge-m3 (1024 dimensions): "
        "vectors change size; re-embed stored vectors"]
