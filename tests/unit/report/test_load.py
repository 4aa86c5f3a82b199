"""`report.load`: access-log lines to records; bad lines are counted, never fatal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion_edge.report.load import (
    MAX_BAD_EXAMPLES,
    MirrorResult,
    load_log,
    parse_line,
    parse_time,
    read_lines,
)


def line(**fields: Any) -> str:
    record: dict[str, Any] = {
        "time": "2025-06-01T14:00:00.000+00:00", "request_id": "r1", "client": "10.0.0.5",
        "method": "POST", "path": "/v1/chat/completions", "endpoint": "chat.completions",
        "original_host": "api.openai.com", "upstream_host": "api.qubittron.ai",
        "original_model": "gpt-4o", "upstream_model": "gpt-oss-120b",
        "destination": "bastion", "decision": "openai", "status": 200,
        "duration_ms": 120.5, "ttfb_ms": 40.25, "bytes_in": 10, "bytes_out": 20,
        "stream": False, "rewrites": [], "key_env": None, "error": None, "notes": []}
    record.update(fields)
    return json.dumps(record)


def test_a_full_access_record() -> None:
    r = parse_line(line())
    assert r.time == datetime(2025, 6, 1, 14, 0, tzinfo=UTC)
    assert (r.endpoint, r.model, r.destination) == ("chat.completions", "gpt-4o", "bastion")
    assert (r.status, r.duration_ms, r.ttfb_ms) == (200, 120.5, 40.25)
    assert r.upstream_model == "gpt-oss-120b"
    assert r.mirror is None and not r.failed


def test_mirror_field_and_unknown_keys() -> None:
    r = parse_line(line(destination="openai", future_field={"x": 1}, mirror={
        "status": 500, "duration_ms": 310.0, "ttfb_ms": None, "shape_match": False,
        "differences": ["status 200 vs 500", "usage missing"], "extra": True}))
    assert r.destination == "openai"
    assert r.mirror == MirrorResult(500, 310.0, None, False,
                                    ("status 200 vs 500", "usage missing"))


def test_malformed_mirror_values_become_unknown() -> None:
    r = parse_line(line(mirror={"status": "500", "duration_ms": -1, "shape_match": "yes",
                                "differences": "oops"}))
    assert r.mirror == MirrorResult(None, None, None, None, ())
    assert parse_line(line(mirror="not an object")).mirror is None


def test_method_is_read_and_logs_without_it_still_load() -> None:
    assert parse_line(line()).method == "POST"
    assert parse_line(line(method="get")).method == "GET"
    assert parse_line(line(method=7)).method is None
    older = json.loads(line())
    del older["method"]
    assert parse_line(json.dumps(older)).method is None


@pytest.mark.parametrize(("status", "failed"), [
    (200, False), (399, False), (400, True), (503, True), (None, True)])
def test_errors_are_400_and_up_or_no_status(status: int | None, failed: bool) -> None:
    assert parse_line(line(status=status)).failed is failed


def test_wrong_types_become_unknown_not_errors() -> None:
    r = parse_line(line(status=True, duration_ms="fast", ttfb_ms=float("nan"), endpoint=7,
                        original_model=None, destination="", stream="yes"))
    assert (r.status, r.duration_ms, r.ttfb_ms) == (None, None, None)
    assert (r.endpoint, r.model, r.destination, r.stream) == ("unknown", "-", "unknown", False)
    assert parse_line(line(status=502.0)).status == 502


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-06-01T14:00:00Z", datetime(2025, 6, 1, 14, tzinfo=UTC)),
    ("2025-06-01T16:00:00+02:00", datetime(2025, 6, 1, 14, tzinfo=UTC)),
    ("2025-06-01T14:00:00", datetime(2025, 6, 1, 14, tzinfo=UTC)),  # naive means UTC
    ("2025-06-01", datetime(2025, 6, 1, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(("bad", "why"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object (list)"),
    ('"text"', "not a JSON object (str)"),
    ('{"endpoint": "chat.completions"}', "no 'time'"),
    ('{"time": 17}', "no 'time'"),
    ('{"time": "yesterday"}', "bad 'time' 'yesterday'"),
    ("[" * 100_000, "not JSON"),
])
def test_bad_lines_say_why(bad: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_line(bad)
    assert str(caught.value).startswith(why)


def test_read_lines_counts_skips_and_sorts() -> None:
    lines = [line(time="2025-06-01T14:00:02Z"), "", "garbage", "   ",
             line(time="2025-06-01T14:00:01Z"), "[]", '{"time": "x"}']
    result = read_lines(lines, source="log")
    assert (result.lines, result.bad, result.filtered) == (5, 3, 0)
    assert [r.time.second for r in result.records] == [1, 2]
    assert [n for n, _ in result.bad_examples] == [3, 6, 7]


def test_bad_examples_are_capped() -> None:
    result = read_lines(["nope"] * 20)
    assert result.bad == 20 and len(result.bad_examples) == MAX_BAD_EXAMPLES


def test_since_is_inclusive_until_exclusive() -> None:
    lines = [line(time=f"2025-06-01T14:0{m}:00Z") for m in range(5)]
    result = read_lines(lines, since=parse_time("2025-06-01T14:01:00Z"),
                        until=parse_time("2025-06-01T14:03:00Z"))
    assert [r.time.minute for r in result.records] == [1, 2]
    assert result.filtered == 3


def test_load_log_survives_binary_junk_and_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(line().encode() + b"\n\xff\xfe\x00garbage\n" + line().encode()
                     + b"\n" + line().encode()[:40])
    result = load_log(path)
    assert len(result.records) == 2 and result.bad == 2 and result.source == str(path)


def test_load_log_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_log(tmp_path / "absent.log")


def test_mirror_as_the_proxy_writes_it() -> None:
    """What hooks.py logs: a compared copy (with `error` on transport failure), or why
    no copy was sent."""
    compared = parse_line(line(destination="openai", mirror={
        "status": None, "duration_ms": 12.5, "ttfb_ms": None, "shape_match": False,
        "differences": [], "error": "ConnectError"}))
    assert compared.mirror == MirrorResult(None, 12.5, None, False, (), "ConnectError")
    assert compared.mirror_skipped is None
    skipped = parse_line(line(destination="openai", mirror={"skipped": "max_in_flight"}))
    assert skipped.mirror is None and skipped.mirror_skipped == "max_in_flight"
    assert parse_line(line(mirror={"skipped": None})).mirror_skipped == "unknown"
