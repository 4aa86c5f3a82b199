"""Mirror agreement end to end: with every pair sampled, each mirrored chat and
Responses record carries `agreement` (similarity from the Bastion sandbox's bge-m3,
tools_match for a tool call, schema_valid for a json_schema answer), and
`bastion-edge report` summarises them per model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import make_client
from harness import BASTION_EDGE, Sandbox, proxy_env, start_proxy, wait_until

MESSAGES = [{"role": "user", "content": "say something"}]
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}},
    "required": ["answer"], "additionalProperties": False}}}


def test_mirror_records_and_report_carry_answer_agreement(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: Sandbox, openai_standin: Sandbox
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("models:\n  gpt-4o: gpt-oss-120b\n  gpt-4o-mini: gpt-oss-20b\n"
                     "cutover:\n  mode: mirror\n  mirror_agreement_share: 1\n"
                     "  mirror_agreement_per_second: 100\n")
    proxy = start_proxy(tmp_path, proxy_env(
        sandbox, BASTION_OPENAI_URL=f"https://127.0.0.1:{openai_standin.port}"), rules=rules)
    try:
        sandbox.clear_journal()
        client = make_client(monkeypatch, proxy)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        client.chat.completions.create(
            model="gpt-4o", tools=[TOOL], tool_choice="required",  # type: ignore[list-item]
            messages=[{"role": "user", "content": "weather in Paris?"}])
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, response_format=SCHEMA)  # type: ignore[arg-type]
        client.responses.create(model="gpt-4o", input="say something")

        def mirrored() -> list[dict[str, object]]:
            lines = proxy.access_log.read_text().splitlines()
            return [r for r in map(json.loads, lines) if "mirror" in r]

        wait_until(lambda: len(mirrored()) >= 4, what="four mirror records")
        agreements = [r["mirror"]["agreement"] for r in mirrored()]  # type: ignore[index]
        texts = [a for a in agreements if "tools_match" not in a]  # a tool call: no text
        assert len(texts) == 3 and all(-1.0 <= a["similarity"] <= 1.0001 for a in texts), \
            agreements
        assert [a["tools_match"] for a in agreements if "tools_match" in a] == [True]
        assert any(a.get("schema_valid") is True for a in agreements), agreements
        embeddings = [e for e in sandbox.journal() if e["path"] == "/v1/embeddings"]
        assert embeddings and all(e["model"] == "bge-m3" for e in embeddings)
        assert all(e["headers"]["authorization"].startswith("Bearer bastion-")
                   for e in embeddings)  # the proxy's Bastion key, never the app's
        assert openai_standin.journal() == [] or all(
            e["path"] != "/v1/embeddings" for e in openai_standin.journal())
    finally:
        proxy.process.stop()
    report = subprocess.run([str(BASTION_EDGE), "report", str(proxy.access_log)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "mirror answer agreement" in report.stdout
    section = report.stdout.split("mirror answer agreement", 1)[1]
    assert "gpt-oss-120b" in section or "gpt-4o" in section
