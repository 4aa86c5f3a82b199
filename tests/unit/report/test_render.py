"""`bastion-edge report`: the terminal table, the HTML page and the command itself."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion_edge.cli import main as cli
from bastion_edge.report import html, terminal
from bastion_edge.report.load import LoadResult, MirrorResult, Record, read_lines
from bastion_edge.report.stats import build_report

T0 = datetime(2025, 6, 1, 14, 0, tzinfo=UTC)


def rec(destination: str, seconds: float, status: int | None = 200, duration: float = 100.0,
        model: str = "gpt-4o", mirror: MirrorResult | None = None) -> Record:
    return Record(T0 + timedelta(seconds=seconds), "chat.completions", model, destination,
                  status, duration, duration / 4, mirror=mirror)


def sample() -> LoadResult:
    records = [rec("bastion", i * 10, duration=float(100 + i)) for i in range(20)]
    records += [rec("bastion", 205, status=502, duration=900.0)]
    records += [rec("openai", i * 10 + 5, duration=float(80 + i),
                    mirror=MirrorResult(200, float(90 + i), None, i != 3, () if i != 3
                                        else ("choices[0].finish_reason: stop vs length",)))
                for i in range(10)]
    return LoadResult(records=records, lines=32, bad=1, bad_examples=[(7, "not JSON: x")],
                      source="access.log")


def log_line(**fields: Any) -> str:
    base: dict[str, Any] = {"time": "2025-06-01T14:00:00Z", "endpoint": "chat.completions",
                            "original_model": "gpt-4o", "destination": "bastion",
                            "status": 200, "duration_ms": 10.0, "ttfb_ms": 5.0}
    base.update(fields)
    return json.dumps(base)


# ------------------------------------------------------------------ terminal

def test_terminal_rows_have_exact_numbers() -> None:
    text = terminal.render(build_report(sample()))
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in text.splitlines()}
    # bastion: durations 100..119 and 900 -> p50 110, p95 rank 19: 119
    assert rows[("chat.completions", "gpt-4o", "bastion")] == [
        "21", "1", "4.8%", "110.0", "119.0", "27.5", "29.8"]
    assert rows[("chat.completions", "gpt-4o", "mirror")] == [
        "10", "0", "0.0%", "94.5", "98.5", "-", "-", "90.0%", "(9/10)"]
    assert rows[("chat.completions", "gpt-4o", "openai")][:5] == ["10", "0", "0.0%", "84.5",
                                                                "88.5"]
    assert rows[("(all)", "bastion", "21")][:2] == ["1", "4.8%"]
    assert "requests: 31 (1 error); 32 lines read, 1 bad line skipped" in text
    assert "  bad line 7: not JSON: x" in text
    assert "[WARN] Error rate" in text and "4.8% vs 0.0%" in text
    assert "[BAD ] Mirror agreement        90.0%" in text
    assert "1  choices[0].finish_reason: stop vs length" in text


def test_terminal_columns_line_up() -> None:
    lines = terminal.render(build_report(sample())).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("endpoint"))
    table = lines[header:header + 8]
    ends = {m.end() for m in re.finditer(r"requests", table[0])}
    for line in table[2:]:
        assert line[max(ends) - 1] != " "  # counts are right-aligned under "requests"


def test_terminal_empty_window() -> None:
    text = terminal.render(build_report(LoadResult(lines=2, bad=2, source="x.log")))
    assert "No records in this window." in text and "2 bad lines skipped" in text


# ------------------------------------------------------------------ html

def test_html_is_one_self_contained_page() -> None:
    page = html.render(build_report(sample()))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and " src=" not in page and " href=" not in page
    assert page.count("<svg") == 5  # 2 distributions, p50/p95 bars, 2 over time
    assert "How Bastion compares with OpenAI" in page
    assert "Mirror agreement" in page and "choices[0].finish_reason" in page
    assert page.count('class="card"') == 4


def test_html_escapes_everything_from_the_log() -> None:
    evil = '<script>alert("x")</script>'
    loaded = read_lines([log_line(original_model=evil, endpoint="<img src=x>"),
                         log_line(destination=evil)], source="<b>log</b>")
    page = html.render(build_report(loaded))
    assert "<script>" not in page and "<img" not in page and "<b>log" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_html_empty_window() -> None:
    page = html.render(build_report(LoadResult(source="x.log")))
    assert "No exchanges in this window." in page and "<svg" not in page


# ------------------------------------------------------------------ command

def test_report_command_writes_table_and_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join([
        log_line(time="2025-06-01T13:59:59Z"),
        log_line(time="2025-06-01T14:00:00Z", duration_ms=10.0),
        log_line(time="2025-06-01T14:00:30Z", duration_ms=30.0, status=500),
        "not json",
        log_line(time="2025-06-01T14:01:00Z")]) + "\n")
    out = tmp_path / "report.html"
    assert cli.main(["report", str(log), "--html", str(out), "--since", "2025-06-01T14:00:00Z",
                     "--until", "2025-06-01T14:01:00"]) == 0
    captured = capsys.readouterr()
    row = next(line.split() for line in captured.out.splitlines()
               if line.startswith("chat.completions"))
    assert row[2:8] == ["bastion", "2", "1", "50.0%", "20.0", "29.0"]
    assert "2 outside --since/--until" in captured.out
    assert f"HTML report: {out.resolve()}" in captured.err
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(tmp_path / "absent.log")]) == 1
    assert "absent.log" in capsys.readouterr().err
    log = tmp_path / "a.log"
    log.write_text(log_line() + "\n")
    assert cli.main(["report", str(log), "--since", "2025-06-02", "--until", "2025-06-01"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["report", str(log), "--since", "last tuesday"])
    assert "not an ISO 8601 time" in capsys.readouterr().err
    assert cli.main(["report", str(log), "--html", str(tmp_path / "no" / "dir.html")]) == 1
