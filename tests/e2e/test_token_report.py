"""The report's tokens section on a real access log: a split cutover (the sandbox standing
in for Bastion and, with its OpenAI persona, for OpenAI) serves real openai-SDK calls
from one app; `bastion-edge report --rules` with a price table prints the tokens
figures the log holds, and the HTML page, opened in headless Chromium, renders the
section with its estimate. BASTION_E2E_ARTIFACTS=DIR keeps the page and screenshot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import openai
import pytest
import yaml
from harness import (
    APP_KEY,
    BASTION_EDGE,
    BASTION_KEY,
    Proxy,
    Sandbox,
    proxy_env,
    start_proxy,
)
from trust_support import BILLING_SECRET, rules_with_apps, with_credentials

from bastion_edge.report.token_render import ESTIMATE_COLOUR

# Replaces the shipped `usage:` (a second top-level `usage:` is refused as a duplicate key).
PRICES = {"currency": "EUR", "prices": {"gpt-4o": {"input": 2.5, "output": 10},
                                         "gpt-oss-120b": {"input": 0.2, "output": 0.8}}}
SPLIT = "cutover:\n  mode: split\n  split_percent: 50\n  sticky_by: conversation\n"


@dataclass
class Run:
    records: list[dict[str, Any]]
    stdout: str
    html: Path


@pytest.fixture(scope="module")
def run(sandbox: Sandbox, openai_standin: Sandbox,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("split")
    rules = rules_with_apps(tmp, SPLIT)
    document = yaml.safe_load(rules.read_text())
    document["usage"] = PRICES
    rules.write_text(yaml.safe_dump(document))
    env = proxy_env(sandbox, QUBITTRON_API_KEY_BILLING=BASTION_KEY,
                    BASTION_OPENAI_URL=f"https://127.0.0.1:{openai_standin.port}")
    proxy: Proxy = start_proxy(tmp, env, rules)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in proxy.app_env().items():
                mp.setenv(name, value)
            mp.setenv("HTTPS_PROXY", with_credentials(proxy.app_env()["HTTPS_PROXY"],
                                                      "billing", BILLING_SECRET))
            client = openai.OpenAI(api_key=APP_KEY, max_retries=0)
            for i in range(16):
                text = f"conversation number {i} " + "and more words " * (i % 4)
                messages = [{"role": "user", "content": text}]
                if i % 2:
                    client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
                else:
                    list(client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                                        stream=True))
    finally:
        assert proxy.process.stop() == 0, proxy.process.log()
    records = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    html = tmp / "report.html"
    done = subprocess.run([BASTION_EDGE, "report", str(proxy.access_log), "--rules", str(rules),
                           "--html", str(html)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    yield Run(records, done.stdout, html)


def test_both_destinations_reported_tokens(run: Run) -> None:
    chats = [r for r in run.records if r["endpoint"] == "chat.completions"]
    assert {r["destination"] for r in chats} == {"bastion", "openai"}
    served_by_bastion = [r for r in chats if r["destination"] == "bastion"]
    # streams the app did not ask usage for are counted too (Bastion was asked for it)
    assert all(r["tokens_source"] == "upstream" for r in served_by_bastion)


def test_terminal_tokens_rows_match_the_log(run: Run) -> None:
    chats = [r for r in run.records if r["endpoint"] == "chat.completions"]
    for destination in ("bastion", "openai"):
        mine = [r for r in chats if r["destination"] == destination]
        reported = [r["tokens"] for r in mine if r["tokens"]]
        mean_in = sum(t["input"] for t in reported) / len(reported)
        mean_out = sum(t["output"] for t in reported) / len(reported)
        line = next(line for line in run.stdout.splitlines()
                    if line.split()[:3] == [destination, "chat.completions", "gpt-4o"])
        cells = line.split()
        assert cells[3:7] == [str(len(mine)), str(len(reported)), f"{mean_in:,.1f}",
                              f"{mean_out:,.1f}"], line
    assert "Bastion vs OpenAI, same app and endpoint" in run.stdout
    assert "ESTIMATE: Estimate from your own prices" in run.stdout
    assert "projected monthly saving at the observed rate:" in run.stdout
    assert "EUR" in run.stdout


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: `make test` installs it (scripts/system-deps)"
    return found


def _chromium_args(profile: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}"]


def test_tokens_section_renders_in_headless_chromium(run: Run, tmp_path: Path) -> None:
    dom = subprocess.run([*_chromium_args(tmp_path / "p1"), "--dump-dom",
                          run.html.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="tokens"' in dom.stdout and "Bastion ÷ OpenAI" in dom.stdout
    assert "Tokens per request by endpoint, model and destination" in dom.stdout
    assert "ESTIMATE" in dom.stdout and "projected monthly saving" in dom.stdout

    png = tmp_path / "tokens.png"
    shot = subprocess.run([*_chromium_args(tmp_path / "p2"), f"--screenshot={png}",
                           "--window-size=1280,7000", run.html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    keep = os.environ.get("BASTION_E2E_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for path in (run.html, png):
            shutil.copy(path, Path(keep) / f"tokens-{path.name}")
    with av.open(str(png)) as container:
        frame = next(container.decode(video=0)).reformat(format="rgb24")
    plane = frame.planes[0]
    data, stride = bytes(plane), plane.line_size
    target = bytes.fromhex(ESTIMATE_COLOUR[1:])
    rows_with_estimate = [y for y in range(frame.height)
                          if _near(data[y * stride:y * stride + frame.width * 3], target)]
    # the estimate's 6-pixel border runs down the whole callout: many rows of it
    assert len(rows_with_estimate) > 40, "the estimate callout did not render"


def _near(row: bytes, target: bytes) -> bool:
    """A pixel of exactly `target` (the border is solid, so its inner pixels are exact)."""
    at = row.find(target)
    while at >= 0:
        if at % 3 == 0:
            return True
        at = row.find(target, at + 1)
    return False
