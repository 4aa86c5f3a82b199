"""Mirror agreement's I/O: Bastion's bge-m3 embeds both answers, through the proxy's
own upstream client and key, for a sampled share of mirrored pairs, rate-bounded.

`AgreementProbe.wanted()` decides (before any work) whether this pair is compared:
a `share` of pairs, and at most `per_second` (a token bucket holding one second's
worth), so agreement never costs Bastion more than that. `score()` extracts the
answers (core.mirror_agreement), asks for the two embeddings in one request, and
returns the access log's `agreement` object; a failed embedding call leaves
`similarity` out and notes `similarity_error`, never failing the mirror record.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from bastion_edge.core.mirror_agreement import (
    agreement,
    answer_of,
    cosine,
    embedding_texts,
)

EMBEDDING_MODEL = "bge-m3"
MAX_CHARS = 8000  # of each answer, embedded (bge-m3 takes 8,192 tokens)
AGREEMENT_ENDPOINTS = ("chat.completions", "responses")


class AgreementProbe:
    def __init__(self, share: float, per_second: float,
                 rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.per_second = per_second
        self._rng = rng
        self._clock = clock
        self._tokens = per_second
        self._at = clock()

    def wanted(self, endpoint: str) -> bool:
        if endpoint not in AGREEMENT_ENDPOINTS or self._rng() >= self.share:
            return False
        now = self._clock()
        self._tokens = min(self.per_second, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def score(self, client: httpx.AsyncClient, base_url: str, key: str,
                    request: Mapping[str, Any], endpoint: str, openai_body: bytes,
                    openai_stream: bool, bastion_body: bytes,
                    bastion_stream: bool) -> dict[str, object] | None:
        """The `agreement` object, or None when either reply holds no answer."""
        openai = answer_of(openai_body, endpoint, openai_stream)
        bastion = answer_of(bastion_body, endpoint, bastion_stream)
        if openai is None or bastion is None:
            return None
        similarity, error = None, None
        texts = embedding_texts(openai, bastion)
        if texts is not None:
            try:
                similarity = await self._similarity(client, base_url, key, texts)
            except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as e:
                error = type(e).__name__
        out = agreement(request, openai, bastion, similarity)
        if error is not None:
            out["similarity_error"] = error
        return out

    @staticmethod
    async def _similarity(client: httpx.AsyncClient, base_url: str, key: str,
                          texts: tuple[str, str]) -> float | None:
        reply = await client.post(
            f"{base_url.rstrip('/')}/embeddings",
            json={"model": EMBEDDING_MODEL, "input": [t[:MAX_CHARS] for t in texts]},
            headers={"authorization": f"Bearer {key}"})
        reply.raise_for_status()
        data = sorted(reply.json()["data"], key=lambda d: d.get("index", 0))
        return cosine(data[0]["embedding"], data[1]["embedding"])
