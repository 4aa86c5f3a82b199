"""One-shot bearer tokens: the adapter serves a request only with a token the hook issued."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

DEFAULT_TTL_SECONDS = 60.0


class TokenRegistry[T]:
    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, T]] = {}

    def issue(self, value: T) -> str:
        self._purge()
        token = secrets.token_urlsafe(32)
        self._entries[token] = (self._clock() + self._ttl, value)
        return token

    def take(self, token: str | None) -> T | None:
        """The value for a live token, which is used up; None if unknown, used or expired."""
        self._purge()
        if not token:
            return None
        entry = self._entries.pop(token, None)
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self) -> None:
        now = self._clock()
        for token in [t for t, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[token]
