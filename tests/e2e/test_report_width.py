"""The HTML report fits a 1,280 px window: no page-wide horizontal scroll and no table
cut off inside its scroll box (headless Chromium measures the laid-out page)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bastion_edge.config.usage_rules import Price
from bastion_edge.report import html
from bastion_edge.report.load import read_lines
from bastion_edge.report.stats import build_report

pytestmark = pytest.mark.e2e

MEASURE = """<script>
const boxes = [...document.querySelectorAll('.scroll, .panel, .cards, .facts')];
const cut = boxes.filter(b => b.scrollWidth > b.clientWidth + 1)
  .map(b => (b.className || b.tagName) + ' ' + b.scrollWidth + '>' + b.clientWidth);
document.body.setAttribute('data-fit', JSON.stringify(
  {page: document.documentElement.scrollWidth, cut: cut}));
</script></body>"""

MODELS = ["gpt-4o", "gpt-4o-mini-2024-07-18",
          "ft:gpt-4o-mini-2024-07-18:acme-corp:support-v2:9ABCdef", "text-embedding-3-large",
          "o4-mini-2025-04-16"]
ENDPOINTS = ["chat.completions", "responses", "embeddings", "audio.transcriptions"]


def busy_log() -> list[str]:
    """Every section of the page, long model ids, many rows."""
    lines = []
    for i in range(400):
        model, endpoint = MODELS[i % len(MODELS)], ENDPOINTS[i % len(ENDPOINTS)]
        destination = ("bastion", "openai")[i % 2]
        record: dict[str, object] = {
            "time": f"2026-01-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z", "endpoint": endpoint,
            "original_model": model, "destination": destination,
            "upstream_model": "Meta-Llama-3_3-70B-Instruct" if destination == "bastion"
            else model, "status": 500 if i % 17 == 0 else 200, "duration_ms": 100.0 + i,
            "ttfb_ms": 20.0 + i % 30, "app": f"application-{i % 3}",
            "tokens": {"input": 1000 + i, "output": 200 + i, "cached_input": 10,
                       "reasoning": 5}}
        if i % 4 == 1:
            record["mirror"] = {"status": 200, "duration_ms": 150.0 + i, "ttfb_ms": 30.0,
                                "shape_match": i % 8 != 1,
                                "differences": ["missing $.choices[].message.refusal"],
                                "agreement": {"similarity": 0.8 + (i % 20) / 100,
                                              "tools_match": i % 3 != 0,
                                              "schema_valid": True}}
        lines.append(json.dumps(record))
    return lines


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is missing: scripts/system-deps installs it")
    return found


def test_report_fits_1280_px(tmp_path: Path) -> None:
    browser = chromium()
    prices = {m: Price(1.0, 4.0) for m in MODELS}
    prices["Meta-Llama-3_3-70B-Instruct"] = Price(0.1, 0.4)
    report = build_report(read_lines(busy_log(), source="/var/log/bastion-edge/access.log"),
                          prices)
    page = html.render(report)
    assert 'id="agreement"' in page and 'id="tokens"' in page
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE, 1), encoding="utf-8")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000", "--dump-dom",
         measured.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-fit="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-2000:]
    fit = json.loads(found.group(1).replace("&quot;", '"'))
    assert fit["page"] <= 1280, fit
    assert fit["cut"] == [], fit
