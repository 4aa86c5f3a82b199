"""The report's per-model summary of mirror answer agreement: a distribution."""

from __future__ import annotations

import json

from bastion_edge.report import html, terminal
from bastion_edge.report.agreement import agreement_summaries, bin_of
from bastion_edge.report.load import read_lines
from bastion_edge.report.stats import build_report


def line(model: str, agreement: dict[str, object] | None) -> str:
    mirror: dict[str, object] = {"status": 200, "duration_ms": 5.0, "shape_match": True}
    if agreement is not None:
        mirror["agreement"] = agreement
    return json.dumps({"time": "2026-01-01T00:00:00Z", "endpoint": "chat.completions",
                       "original_model": model, "destination": "openai", "status": 200,
                       "duration_ms": 4.0, "mirror": mirror})


def sample() -> list[str]:
    values = [0.2, 0.75, 0.85, 0.9, 0.92, 0.96, 0.97, 0.99]
    lines = [line("gpt-4o", {"similarity": v}) for v in values]
    lines += [line("gpt-4o", {"tools_match": True}), line("gpt-4o", {"tools_match": False}),
              line("gpt-4o", {"similarity": 0.93, "schema_valid": True}),
              line("gpt-4o-mini", None), line("gpt-4o-mini", {"similarity": "x"})]
    return lines


def test_bins() -> None:
    assert [bin_of(v) for v in (0.0, 0.49, 0.5, 0.79, 0.8, 0.949, 0.95, 1.0)] == [
        0, 0, 1, 2, 3, 4, 5, 5]


def test_distribution_per_model() -> None:
    loaded = read_lines(sample())
    (s,) = [x for x in agreement_summaries(loaded.records) if x.model == "gpt-4o"]
    assert s.n == 9 and s.minimum == 0.2
    assert (s.q1, s.median, s.q3) == (0.85, 0.92, 0.96)
    assert s.histogram == (1, 0, 1, 1, 3, 3)
    assert (s.tools, s.schema) == ((1, 2), (1, 1))
    assert [x.model for x in agreement_summaries(loaded.records)] == ["gpt-4o"]


def test_rendered_in_terminal_and_html() -> None:
    report = build_report(read_lines(sample(), source="log"))
    text = terminal.render(report)
    assert "mirror answer agreement" in text
    row = next(r for r in text.splitlines() if r.startswith("chat.completions  gpt-4o ")
               and "0.920" in r)
    assert "1 0 1 1 3 3" in row and "1/2" in row
    page = html.render(report)
    assert 'id="agreement"' in page and "Similarity histogram" in page
