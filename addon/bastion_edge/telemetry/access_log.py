"""JSON access log: one object per exchange, secrets never included.

Records are built from plain values (`AccessRecord`); headers are never copied
wholesale, so `Authorization` and keys cannot leak into the log by construction.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass(slots=True)
class AccessRecord:
    time: str
    request_id: str
    client: str | None
    app: str | None  # the app its proxy credentials named
    method: str
    path: str
    endpoint: str
    original_host: str
    upstream_host: str | None
    original_model: str | None
    upstream_model: str | None
    destination: str
    decision: str
    status: int | None
    duration_ms: float | None
    ttfb_ms: float | None
    bytes_in: int
    bytes_out: int
    stream: bool
    rewrites: list[str] = field(default_factory=list)
    key_env: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    mirror: dict[str, Any] | None = None  # mirror mode: how Bastion's copy compared
    request_body: Any = None  # only with the bodies option, secrets redacted
    response_body: Any = None
    attempts: list[dict[str, object]] | None = None  # a 404 retry: every model tried
    tokens: dict[str, int] | None = None  # input/output/cached_input/reasoning as reported
    tokens_source: str | None = None  # "upstream", or "not_reported": no figures, no estimate
    tts_characters: int | None = None  # audio.speech: characters of input synthesized
    would_model: str | None = None  # served by OpenAI: the Bastion model rules would use

    def to_json(self) -> str:
        fields = {name: getattr(self, name) for name in self.__slots__}  # asdict() is slow
        for optional in _OPTIONAL_FIELDS:
            if fields[optional] is None:
                del fields[optional]
        return json.dumps(fields, separators=(",", ":"))


_OPTIONAL_FIELDS = ("mirror", "request_body", "response_body", "attempts", "tts_characters",
                    "would_model")


class AccessLog:
    """Appends JSON lines to a file, or stdout for `-`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._stream: IO[str]
        if target == "-":
            self._stream = sys.stdout
        else:
            self._stream = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, record: AccessRecord) -> None:
        line = record.to_json() + "\n"
        with self._lock:
            self._stream.write(line)  # files are line-buffered: one write per record
            if self._stream is sys.stdout:
                self._stream.flush()

    def write_line(self, line: str) -> None:
        """A record that is not an exchange (e.g. telemetry.cutover_metrics.cutover_record)."""
        with self._lock:
            self._stream.write(line + "\n")
            if self._stream is sys.stdout:
                self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()


MAX_LOGGED_BODY = 64 * 1024
MAX_LOGGED_DEPTH = 64  # deeper JSON is logged as unloggable, never recursed into
# Credential fields, by exact name (lower case, "-" read as "_"): `max_tokens`,
# `usage.prompt_tokens` or `keywords` are not credentials and stay in the log.
SECRET_FIELDS = frozenset({
    "api_key", "apikey", "x_api_key", "openai_api_key", "qubittron_api_key", "key",
    "secret", "client_secret", "secret_key", "private_key", "password", "passwd",
    "authorization", "proxy_authorization", "bearer", "token", "access_token",
    "refresh_token", "id_token", "session_token", "auth_token",
})
_OPENAI_KEY = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")
REDACTED_VALUE = "[redacted]"
UNLOGGABLE = f"[unloggable: nested deeper than {MAX_LOGGED_DEPTH} levels]"


class TooDeep(ValueError):
    """A body nested deeper than MAX_LOGGED_DEPTH."""


def is_secret_field(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_FIELDS


def loggable_body(raw: bytes | None, secrets: Iterable[str]) -> Any:
    """A JSON body for the log with credentials redacted; None if absent, big or not JSON.

    A body that cannot be redacted (nested too deep) becomes the UNLOGGABLE marker, so
    the exchange's record is still written.
    """
    if not raw or len(raw) > MAX_LOGGED_BODY:
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        return UNLOGGABLE
    except ValueError:
        return None
    try:
        return redact(value, tuple(s for s in secrets if s))
    except (TooDeep, RecursionError):
        return UNLOGGABLE


def redact(value: Any, secrets: tuple[str, ...], depth: int = 0) -> Any:
    """`value` with credential fields and secret strings replaced; TooDeep past the bound."""
    if depth > MAX_LOGGED_DEPTH:
        raise TooDeep(f"JSON nested deeper than {MAX_LOGGED_DEPTH} levels")
    if isinstance(value, dict):
        return {k: REDACTED_VALUE if is_secret_field(k) else redact(v, secrets, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets, depth + 1) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED_VALUE)
        return _OPENAI_KEY.sub(REDACTED_VALUE, value)
    return value
