"""Responses `item_reference` input items, resolved by the proxy from its store.

The Vercel AI SDK's default `openai("gpt-4o")` uses the Responses API with `store` on
and sends turn 1's assistant message back as `{"type": "item_reference", "id":
"msg_..."}` on turn 2. The sandbox, like Bastion, refuses references; the proxy must
put the stored item in its place. The raw openai SDK covers chained, streamed and
unknown references."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
from harness import Proxy, Sandbox
from test_responses_state import texts, upstream_bodies
from test_transparent import app_env, node_app, require_node

AI_SDK_APP = """\
import { generateText, streamText } from "ai";
import { openai } from "@ai-sdk/openai";
const messages = [{ role: "user", content: "capital of France?" }];
const first = await generateText({ model: openai("gpt-4o"), messages, maxRetries: 0 });
messages.push(...first.response.messages, { role: "user", content: "and of Italy?" });
let second;
if (process.argv[2] === "stream") {
  const result = streamText({ model: openai("gpt-4o"), messages, maxRetries: 0,
                              onError: ({ error }) => { console.error(error); process.exit(3); } });
  second = await result.text;
} else {
  second = (await generateText({ model: openai("gpt-4o"), messages, maxRetries: 0 })).text;
}
console.log(JSON.stringify({ first: first.text, second }));
"""


def _vercel_two_turns(proxy: Proxy, tmp_path: Path, mode: str) -> dict[str, str]:
    require_node()
    if not (Path(__file__).resolve().parents[2] / "sidecar/node/node_modules/ai").is_dir():
        pytest.fail("sidecar/node/node_modules/ai is missing: run `make install-test`")
    app = node_app(tmp_path / "ai-sdk-app", AI_SDK_APP)
    done = subprocess.run(["node", str(app), mode], env=app_env(tmp_path, **proxy.app_env()),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_vercel_ai_sdk_second_turn_reference_is_resolved(
    proxy: Proxy, sandbox: Sandbox, tmp_path: Path, mode: str
) -> None:
    sandbox.clear_journal()
    result = _vercel_two_turns(proxy, tmp_path, mode)
    assert "capital of France?" in result["first"]
    assert "and of Italy?" in result["second"]
    first, second = upstream_bodies(sandbox)
    assert first["store"] is False and second["store"] is False
    assert not any(item.get("type") == "item_reference" for item in second["input"])
    assert [kind for kind, _ in texts(second["input"])] == ["user", "assistant", "user"]
    assert texts(second["input"])[1][1] == result["first"]  # the stored message itself
    notes = [r.get("notes", []) for r in _access(proxy) if r.get("endpoint") == "responses"]
    assert ["resolved item_reference: 1 items"] in [
        [n for n in note if n.startswith("resolved")] for note in notes]


def _access(proxy: Proxy) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proxy.access_log.read_text().splitlines()]


def test_reference_to_an_input_item_in_a_chained_streamed_request(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    first = client.responses.create(model="gpt-4o", input="remember: blue")
    listed = client.responses.input_items.list(first.id)
    user_item_id = listed.data[0].id
    second = client.responses.create(model="gpt-4o", input="what colour?",
                                     previous_response_id=first.id)
    sandbox.clear_journal()
    with client.responses.stream(
        model="gpt-4o", previous_response_id=second.id,
        input=[{"type": "item_reference", "id": user_item_id},
               {"role": "user", "content": "say it again"}],
    ) as stream:
        final = stream.get_final_response()
    assert "say it again" in final.output_text
    (upstream,) = upstream_bodies(sandbox)
    assert texts(upstream["input"]) == [
        ("user", "remember: blue"), ("assistant", first.output_text),
        ("user", "what colour?"), ("assistant", second.output_text),
        ("user", "remember: blue"), ("user", "say it again")]


def test_unknown_or_foreign_reference_is_openai_404(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    mine = client.responses.create(model="gpt-4o", input="private")
    other = client.with_options(api_key="sk-some-other-app-key-1234")
    sandbox.clear_journal()
    for app, item_id in ((client, "msg_never_existed"), (other, mine.output[0].id)):
        with pytest.raises(openai.NotFoundError) as info:
            app.responses.create(model="gpt-4o",
                                 input=[{"type": "item_reference", "id": item_id}])
        error = info.value.body
        assert isinstance(error, dict)
        assert (error["code"], error["param"]) == ("item_not_found", "input")
        assert item_id in error["message"]
    assert upstream_bodies(sandbox) == []
