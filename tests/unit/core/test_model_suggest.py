"""`rules suggest`'s pure part: ids by class, refined by capabilities seen."""

from __future__ import annotations

from bastion_edge.config.rules import parse_rules
from bastion_edge.config.schema import ModelCapabilities
from bastion_edge.core.model_suggest import (
    Seen,
    capabilities_of,
    class_of,
    collect,
    render,
    suggest,
    unmapped,
)

IMAGE = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}
NO_TOOLS = {"gpt-oss-20b": ModelCapabilities(tools=False, json_schema=False, vision=False),
            "gpt-oss-120b": ModelCapabilities(vision=False)}


def seen(model: str, endpoint: str = "chat.completions", *caps: str) -> Seen:
    s = Seen(model, 1)
    s.endpoints[endpoint] += 1
    s.capabilities.update(caps)
    return s


def test_capabilities_of_chat_and_responses_bodies() -> None:
    assert capabilities_of({"messages": [IMAGE], "tools": [{}]}) == {"vision", "tools"}
    assert capabilities_of({"response_format": {"type": "json_schema"}}) == {"json_schema"}
    assert capabilities_of({"input": [{"content": [{"type": "input_image"}]}],
                            "text": {"format": {"type": "json_schema"}}}) == {
        "vision", "json_schema"}
    assert capabilities_of(None) == set() and capabilities_of({"messages": []}) == set()


def test_classes_by_endpoint_then_family() -> None:
    assert class_of(seen("gpt-4o")) == "gpt-oss-120b"
    assert class_of(seen("gpt-4o-mini")) == "gpt-oss-20b"
    assert class_of(seen("gpt-5-nano-2025-08-07")) == "gpt-oss-20b"
    assert class_of(seen("o4-mini")) == "gpt-oss-120b"  # reasoning: general
    assert class_of(seen("gpt-5.1-codex-mini")) == "Qwen3-Coder-30B-A3B-Instruct"
    assert class_of(seen("text-embedding-3-large", "embeddings")) == "bge-m3"
    assert class_of(seen("my-embedder", "embeddings")) == "bge-m3"
    assert class_of(seen("gpt-4o-transcribe", "audio.transcriptions")) == "whisper-large-v3"
    assert class_of(seen("dall-e-3", "images.generations")) == "FLUX.1-schnell"


def test_capabilities_seen_refine_the_target() -> None:
    tools = suggest(seen("gpt-4o-mini", "chat.completions", "tools"), NO_TOOLS)
    assert tools.target == "gpt-oss-120b" and "tools seen" in tools.why
    vision = suggest(seen("gpt-4o", "chat.completions", "vision"), NO_TOOLS)
    assert (vision.target, vision.vision_choice) == ("gpt-oss-120b", "Qwen2.5-VL-72B-Instruct")
    plain = suggest(seen("gpt-4o-mini"), NO_TOOLS)
    assert (plain.target, plain.vision_choice) == ("gpt-oss-20b", None)


def test_collect_counts_and_render_parses_as_rules() -> None:
    records = [{"original_model": "gpt-4o", "endpoint": "chat.completions",
                "request_body": {"messages": [IMAGE]}},
               {"original_model": "gpt-4o", "endpoint": "chat.completions"},
               {"original_model": "weird:id", "endpoint": "chat.completions"},
               {"original_model": "tts-1", "endpoint": "audio.speech"},
               {"event": "cutover", "original_model": "x"},
               {"original_model": None, "endpoint": "models"}]
    found = collect(records)
    assert [(s.model, s.exchanges) for s in found] == [("gpt-4o", 2), ("tts-1", 1),
                                                       ("weird:id", 1)]
    text = render(found, NO_TOOLS, "access.log")
    assert "# 2 exchanges (chat.completions); seen: vision" in text
    rules = parse_rules(text)
    assert {r.pattern for r in rules.models} == {"gpt-4o", "weird:id"}
    assert unmapped(found, rules.models) == []
    assert unmapped(found, parse_rules("models: {gpt-4o: gpt-oss-120b}").models) == [
        "weird:id"]  # speech is served by voice: never "unmapped"
