"""Read a JSON-lines access log into typed records, robustly.

A line that is not a JSON object, or has no parsable `time`, is counted as bad and
skipped; a field of the wrong type becomes "unknown" (None) rather than failing the
whole report. Unknown extra keys are ignored, so newer logs still load.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_BAD_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class MirrorResult:
    """The copy of an exchange sent to Bastion in mirror mode."""

    status: int | None
    duration_ms: float | None
    ttfb_ms: float | None
    shape_match: bool | None
    differences: tuple[str, ...] = ()
    error: str | None = None  # the copy got no response (transport error)
    similarity: float | None = None  # agreement: cosine of the answers' embeddings
    tools_match: bool | None = None  # agreement: same tools, arguments valid
    schema_valid: bool | None = None  # agreement: Bastion's json_schema answer validates


@dataclass(frozen=True, slots=True)
class Tokens:
    """A record's token figures (0 where the upstream reported none of that kind)."""

    input: int
    output: int
    cached_input: int = 0
    reasoning: int = 0


def _tokens(value: Any) -> Tokens | None:
    if not isinstance(value, dict):
        return None
    figures = {name: _int(value.get(name)) for name in
               ("input", "output", "cached_input", "reasoning")}
    if all(v is None for v in figures.values()):
        return None
    return Tokens(*(max(v or 0, 0) for v in figures.values()))


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of one access-log line the report uses."""

    time: datetime  # timezone-aware, UTC
    endpoint: str
    model: str  # the model the app asked for ("-" when none)
    destination: str  # bastion | openai | proxy | anything newer
    status: int | None
    duration_ms: float | None
    ttfb_ms: float | None
    upstream_model: str | None = None
    error: str | None = None
    stream: bool = False
    mirror: MirrorResult | None = None
    mirror_skipped: str | None = None  # mirror mode did not send a copy, and why
    app: str | None = None
    tokens: Tokens | None = None  # as the upstream reported them; None: not reported
    method: str | None = None  # the HTTP method (upper case); None: a log without it

    @property
    def failed(self) -> bool:
        return is_error(self.status)


def is_error(status: int | None) -> bool:
    """An error is an HTTP status >= 400 or no status at all (no response)."""
    return status is None or status >= 400


@dataclass(slots=True)
class LoadResult:
    records: list[Record] = field(default_factory=list)
    lines: int = 0  # non-blank lines read
    bad: int = 0  # lines skipped as unparsable
    bad_examples: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    filtered: int = 0  # good lines outside --since/--until
    events: int = 0  # records that are not exchanges (`"event": "cutover"` decisions)
    source: str = ""


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (naive means UTC)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _method(value: Any) -> str | None:
    text = _str(value)
    return text.upper() if text is not None else None


def _mirror(value: Any) -> MirrorResult | None:
    if not isinstance(value, dict) or "skipped" in value:
        return None
    match = value.get("shape_match")
    differences = value.get("differences")
    return MirrorResult(
        status=_int(value.get("status")),
        duration_ms=_float(value.get("duration_ms")),
        ttfb_ms=_float(value.get("ttfb_ms")),
        shape_match=match if isinstance(match, bool) else None,
        differences=tuple(str(d) for d in differences) if isinstance(differences, list) else (),
        error=_str(value.get("error")),
        **_agreement(value.get("agreement")),
    )


def _agreement(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    similarity = value.get("similarity")
    flags = {name: value.get(name) if isinstance(value.get(name), bool) else None
             for name in ("tools_match", "schema_valid")}
    number = (float(similarity) if isinstance(similarity, int | float)
              and not isinstance(similarity, bool) and math.isfinite(similarity) else None)
    return {"similarity": number, **flags}


def _skipped(value: Any) -> str | None:
    if not isinstance(value, dict) or "skipped" not in value:
        return None
    return _str(value["skipped"]) or "unknown"


class NotAnExchange(ValueError):
    """A well-formed record of something else (a canary decision)."""


def parse_line(line: str) -> Record:
    """One log line as a Record; ValueError says why it cannot be one."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object ({type(data).__name__})")
    if isinstance(data.get("event"), str):
        raise NotAnExchange(data["event"])
    raw_time = data.get("time")
    if not isinstance(raw_time, str):
        raise ValueError("no 'time'")
    try:
        when = parse_time(raw_time)
    except ValueError:
        raise ValueError(f"bad 'time' {raw_time[:40]!r}") from None
    return Record(
        time=when,
        endpoint=_str(data.get("endpoint")) or "unknown",
        model=_str(data.get("original_model")) or "-",
        destination=_str(data.get("destination")) or "unknown",
        status=_int(data.get("status")),
        duration_ms=_float(data.get("duration_ms")),
        ttfb_ms=_float(data.get("ttfb_ms")),
        upstream_model=_str(data.get("upstream_model")),
        error=_str(data.get("error")),
        stream=data.get("stream") is True,
        mirror=_mirror(data.get("mirror")),
        mirror_skipped=_skipped(data.get("mirror")),
        app=_str(data.get("app")),
        tokens=_tokens(data.get("tokens")),
        method=_method(data.get("method")),
    )


def read_lines(lines: Iterable[str], since: datetime | None = None,
               until: datetime | None = None, source: str = "") -> LoadResult:
    """Records from lines, keeping those with since <= time < until."""
    result = LoadResult(source=source)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        result.lines += 1
        try:
            record = parse_line(line)
        except NotAnExchange:
            result.events += 1
            continue
        except ValueError as e:
            result.bad += 1
            if len(result.bad_examples) < MAX_BAD_EXAMPLES:
                result.bad_examples.append((number, str(e)))
            continue
        if (since is not None and record.time < since) or (
                until is not None and record.time >= until):
            result.filtered += 1
            continue
        result.records.append(record)
    result.records.sort(key=lambda r: r.time)
    return result


def load_log(path: str | Path, since: datetime | None = None,
             until: datetime | None = None) -> LoadResult:
    """Records from a log file ("-" reads stdin); OSError when it cannot be opened."""
    if str(path) == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        return read_lines(stdin, since, until, source="<stdin>")
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        return read_lines(f, since, until, source=str(path))
