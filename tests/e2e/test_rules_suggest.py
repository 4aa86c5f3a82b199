"""`bastion-edge rules suggest` on an access log: exit 1 while the current rules leave
a seen id unmapped; its output, as the rules' models, passes `check` and maps them all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import BASTION_EDGE

pytestmark = pytest.mark.e2e

IMAGE = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}
CAPABILITIES = """
capabilities:
  gpt-oss-120b: {vision: false}
  gpt-oss-20b: {tools: false, vision: false}
"""


def line(model: str, endpoint: str = "chat.completions", body: object = None) -> str:
    record = {"time": "2026-01-01T00:00:00Z", "endpoint": endpoint, "original_model": model,
              "destination": "openai", "status": 200}
    if body is not None:
        record["request_body"] = body
    return json.dumps(record)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BASTION_EDGE), *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "QUBITTRON_API_KEY": "x"})


def test_suggest_round_trips_into_check(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join([
        line("gpt-4o", body={"messages": [IMAGE]}), line("gpt-4o"),
        line("gpt-4o-mini", body={"messages": [], "tools": [{"type": "function"}]}),
        line("text-embedding-3-small", "embeddings"), line("whisper-1", "audio.transcriptions"),
        line("o4-mini"), line("ft:gpt-4o-mini:acme:v1"), line("tts-1", "audio.speech"),
        '{"time":"2026-01-01T00:00:01Z","event":"cutover","decision":"promote"}',
    ]) + "\n")
    current = tmp_path / "current.yaml"
    current.write_text("models:\n  gpt-4o: gpt-oss-120b\n" + CAPABILITIES)

    first = cli("rules", "suggest", str(log), "--rules", str(current))
    assert first.returncode == 1, first.stderr
    assert "leaves 5 seen id(s) unmapped" in first.stderr
    assert "ft:gpt-4o-mini:acme:v1" in first.stderr and "tts-1" not in first.stderr
    out = first.stdout
    assert out.splitlines()[1] == "models:"
    assert '"gpt-4o":  # 2 exchanges (chat.completions); seen: vision' in out
    assert "use: Qwen2.5-VL-72B-Instruct" in out
    assert '"gpt-4o-mini": gpt-oss-120b  # 1 exchanges (chat.completions); seen: tools' in out
    assert '"text-embedding-3-small": bge-m3' in out and '"whisper-1": whisper-large-v3' in out

    suggested = tmp_path / "suggested.yaml"
    suggested.write_text(out + CAPABILITIES)
    check = cli("check", "--rules", str(suggested))
    assert check.returncode == 0, check.stderr
    assert "ft:gpt-4o-mini:acme:v1" in check.stdout
    again = cli("rules", "suggest", str(log), "--rules", str(suggested))
    assert again.returncode == 0, again.stderr
    assert "maps every seen id" in again.stderr
