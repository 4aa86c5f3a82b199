"""The access-log record names the model that served: OpenAI's on OpenAI (the Bastion
model the rules would have used goes to `would_model`), and speech records carry the
app's model."""

from __future__ import annotations

import json

from bastion_edge.config.rules import parse_rules
from bastion_edge.core.planner import Policy, plan_body, plan_head
from bastion_edge.core.request import ParsedBody, RequestHead
from bastion_edge.proxy.exchange import Exchange

ENV = {"QUBITTRON_API_KEY": "bk-test"}


def exchange(mode: str, body: dict[str, object], path: str = "/v1/chat/completions"
             ) -> Exchange:
    policy = Policy.of(parse_rules(f"models:\n  gpt-4o: gpt-oss-120b\ncutover:\n  mode: {mode}\n"))
    raw = json.dumps(body).encode()
    head = RequestHead("https", "api.openai.com", "POST", path,
                       {"content-type": "application/json", "content-length": str(len(raw))})
    first = plan_head(head, policy, ENV)
    assert first is not None
    plan = plan_body(first, ParsedBody(raw), policy, ENV) if first.body_step.name != "NONE" \
        else first
    return Exchange("r1", plan, "api.openai.com", "127.0.0.1", started=0.0)


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_openai_served_record_names_openai_model() -> None:
    observed = exchange("observe", CHAT)
    record = json.loads(observed.record(200, 1.0).to_json())
    assert record["destination"] == "openai"
    assert record["upstream_model"] == "gpt-4o"  # what served it
    assert record["would_model"] == "gpt-oss-120b"  # what Bastion would have used
    observed.response_model = "gpt-4o-2024-08-06"
    assert observed.record(200, 1.0).upstream_model == "gpt-4o-2024-08-06"


def test_bastion_served_record_is_unchanged() -> None:
    record = json.loads(exchange("rewrite", CHAT).record(200, 1.0).to_json())
    assert (record["destination"], record["upstream_model"]) == ("bastion", "gpt-oss-120b")
    assert "would_model" not in record


def test_speech_record_carries_the_model() -> None:
    speech = exchange("rewrite", {"model": "tts-1", "input": "hi", "voice": "alloy"},
                      "/v1/audio/speech")
    assert speech.record(200, 1.0).original_model is None  # the planner does not read it
    speech.speech_model = "tts-1"  # the TTS adapter's header says model=tts-1
    speech.tts_voice = "English-US.Female-1"
    record = speech.record(200, 1.0)
    assert (record.original_model, record.upstream_model) == ("tts-1", "English-US.Female-1")
