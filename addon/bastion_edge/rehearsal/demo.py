"""`bastion-edge demo`: the whole migration, offline, in one command.

Starts the sandbox (a strict stand-in for Bastion) and the proxy, then acts as an
unmodified app: OpenAI's own SDK with an OpenAI key, configured only by the
environment `bastion-edge env` prints. Each call's rewrite is printed.
"""

from __future__ import annotations

import io
import os
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion_edge.rehearsal.localrun import Sandbox, proxy_env, start_proxy, start_sandbox

APP_KEY = "sk-demo-app-openai-key"
UPSTREAM_MODEL_HEADER = "x-bastion-edge-upstream-model"


def run_demo(rules: Path | None = None) -> int:
    import openai

    rules = rules or Path(os.environ.get("BASTION_RULES") or "rules.yaml")
    if not rules.is_file():
        print(f"demo: no rules file at {rules} (run it from the repository root)")
        return 1
    with tempfile.TemporaryDirectory(prefix="bastion-edge-demo-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox = start_sandbox(tmp)
        proxy = start_proxy(tmp / "proxy", proxy_env(sandbox), rules.resolve())
        print(f"sandbox (stand-in for Bastion): {sandbox.base_url}")
        print(f"bastion-edge proxy:             {proxy.url}  (rules: {rules})")
        print("the app's environment, from `bastion-edge env`:")
        for name, value in proxy.env_lines.items():
            print(f"  {name}={value}")
            os.environ[name] = value
        client = openai.OpenAI(api_key=APP_KEY, max_retries=0)
        failures = 0
        try:
            print(f"\n{'call':<34} {'app asked for':<24} {'Bastion served':<30} rewrites")
            for label, asked, call in _calls(client):
                try:
                    raw = call()
                    served = raw.headers.get(UPSTREAM_MODEL_HEADER, "-")
                    rewrites = raw.headers.get("x-bastion-edge-rewrites", "-")
                    print(f"{label:<34} {asked:<24} {served:<30} {rewrites}")
                except openai.APIError as e:
                    failures += 1
                    print(f"{label:<34} {asked:<24} FAILED: {e}")
            failures += _show_upstream_view(sandbox)
        finally:
            proxy.process.stop()
            sandbox.process.stop()
    print("\ndemo ok" if not failures else f"\ndemo: {failures} call(s) failed")
    return 0 if not failures else 1


def _calls(client: Any) -> list[tuple[str, str, Callable[[], Any]]]:
    user = [{"role": "user", "content": "Hello from an unmodified app"}]
    image = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
    audio = _tone_wav()
    return [
        ("chat.completions", "gpt-4o",
         lambda: client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user)),
        ("chat.completions (stream)", "gpt-4o-mini",
         lambda: _drain(client.chat.completions.with_raw_response.create(
             model="gpt-4o-mini", messages=user, stream=True))),
        ("chat.completions (image input)", "gpt-4o",
         lambda: client.chat.completions.with_raw_response.create(model="gpt-4o", messages=image)),
        ("chat.completions (X-Bastion-Route)", "gpt-4o",
         lambda: client.chat.completions.with_raw_response.create(
             model="gpt-4o", messages=user, extra_headers={"X-Bastion-Route": "coding"})),
        ("completions", "gpt-3.5-turbo-instruct",
         lambda: client.completions.with_raw_response.create(
             model="gpt-3.5-turbo-instruct", prompt="Say hi")),
        ("embeddings", "text-embedding-3-small",
         lambda: client.embeddings.with_raw_response.create(
             model="text-embedding-3-small", input="zero-code migration")),
        ("images.generations (no model)", "(dall-e-2 default)",
         lambda: client.images.with_raw_response.generate(prompt="a lighthouse")),
        ("audio.transcriptions", "whisper-1",
         lambda: client.audio.transcriptions.with_raw_response.create(
             model="whisper-1", file=("hello.wav", audio))),
        ("responses (store forced false)", "gpt-4o",
         lambda: client.responses.with_raw_response.create(model="gpt-4o", input="Hi")),
        ("responses (previous_response_id)", "gpt-4o",
         lambda: client.responses.with_raw_response.create(
             model="gpt-4o", input="And then?", previous_response_id=client.responses.create(
                 model="gpt-4o", input="Tell me a story").id)),
        ("responses (stream)", "gpt-4o",
         lambda: _drain(client.responses.with_raw_response.create(
             model="gpt-4o", input="Hi", stream=True))),
        ("models.retrieve", "gpt-4o",
         lambda: client.models.with_raw_response.retrieve("gpt-4o")),
        ("audio.speech -> Riva (mp3)", "tts-1 / alloy",
         lambda: client.audio.speech.with_raw_response.create(
             model="tts-1", voice="alloy", input="Hello from Bastion.")),
    ]


def _drain(raw: Any) -> Any:
    for _ in raw.parse():
        pass
    return raw


def _tone_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x10\x00\xf0" * 8000)
    return buffer.getvalue()


def _show_upstream_view(sandbox: Sandbox) -> int:
    """What Bastion saw: its key only, never the app's OpenAI key."""
    journal = sandbox.journal()
    leaked = [e for e in journal if APP_KEY in str(e)]
    keys = {str(e.get("headers", {}).get("authorization", "")) for e in journal}
    print(f"\nthe sandbox saw {len(journal)} requests, authorized with: "
          + ", ".join(sorted(k.split(" ", 1)[0] + " <bastion key>" for k in keys if k)))
    print("the app's OpenAI key reached the upstream: " + ("YES (bug!)" if leaked else "never"))
    return len(leaked)
