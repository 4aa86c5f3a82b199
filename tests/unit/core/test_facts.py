"""Facts the rules decide on: endpoint names, key hash, image input, prompt size."""

from __future__ import annotations

import hashlib

import pytest

from bastion_edge.core.facts import (
    BATCHES,
    CHARS_PER_TOKEN,
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    FILES,
    IMAGES_EDITS,
    IMAGES_GENERATIONS,
    MODELS,
    OTHER,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    classify_endpoint,
    facts_from_json,
    key_sha256,
)


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions/", CHAT),
        ("/v1/chat/completions?stream=true", CHAT),
        ("/v1/completions", COMPLETIONS),
        ("/v1/embeddings", EMBEDDINGS),
        ("/v1/images/generations", IMAGES_GENERATIONS),
        ("/v1/images/edits", IMAGES_EDITS),
        ("/v1/audio/transcriptions", TRANSCRIPTIONS),
        ("/v1/audio/translations", TRANSLATIONS),
        ("/v1/audio/speech", SPEECH),
        ("/v1/responses", RESPONSES),
        ("/v1/responses/resp_123", RESPONSES),
        ("/v1/models", MODELS),
        ("/v1/models/gpt-4o", MODELS),
        ("/v1/files", FILES),  # answered by the proxy's Files API (batch/)
        ("/v1/files/file-1/content", FILES),
        ("/v1/batches/batch_1/cancel", BATCHES),
        ("/v1/filesx", OTHER),
        ("/v1/fine_tuning/jobs", OTHER),
        ("/v2/chat/completions", OTHER),
        ("/v1/chat/completionsx", OTHER),
        ("/", OTHER),
    ],
)
def test_classify_endpoint(path: str, endpoint: str) -> None:
    assert classify_endpoint(path) == endpoint


def test_key_sha256_hashes_bearer_token_only() -> None:
    expected = hashlib.sha256(b"sk-test-123").hexdigest()
    assert key_sha256("Bearer sk-test-123") == expected
    assert key_sha256("bearer   sk-test-123 ") == expected
    assert key_sha256("sk-test-123") == expected
    assert key_sha256(None) is None
    assert key_sha256("") is None
    assert key_sha256("Bearer ") is None


def test_text_only_chat_has_no_image_and_counts_characters() -> None:
    body = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "a" * 40},
        {"role": "user", "content": [{"type": "text", "text": "b" * 60}]},
    ]}
    facts = facts_from_json(body)
    assert facts.has_image is False
    assert facts.prompt_tokens == 100 // CHARS_PER_TOKEN


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_image", "image_url": "https://x/y.png"},
        {"type": "image", "source": {}},
        {"image_url": {"url": "https://x/y.png"}},
    ],
)
def test_image_parts_detected(part: dict[str, object]) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}
    assert facts_from_json(body).has_image is True


def test_responses_input_image_detected() -> None:
    body = {"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    ]}]}
    facts = facts_from_json(body)
    assert facts.has_image is True


def test_image_data_not_counted_as_prompt_text() -> None:
    huge = "A" * 400_000
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{huge}"}}]}]}
    assert facts_from_json(body).prompt_tokens == 0


def test_prompt_tokens_from_string_inputs_and_instructions() -> None:
    assert facts_from_json({"input": "x" * 400}).prompt_tokens == 100
    assert facts_from_json({"prompt": ["x" * 40, "y" * 40]}).prompt_tokens == 20
    assert facts_from_json({"instructions": "z" * 8, "input": "w" * 8}).prompt_tokens == 4


def test_non_prompt_fields_ignored() -> None:
    body = {"model": "m" * 1000, "metadata": {"text": "t" * 1000}, "messages": []}
    facts = facts_from_json(body)
    assert facts.prompt_tokens == 0
    assert facts.has_image is False
