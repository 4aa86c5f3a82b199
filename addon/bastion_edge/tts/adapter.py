"""The in-process TTS server mitmproxy forwards `/v1/audio/speech` flows to.

mitmproxy cannot stream a response an addon makes up, but it streams what an upstream
sends; so the hook points the flow at this aiohttp server on 127.0.0.1 with a one-shot
token (`register`) in `TOKEN_HEADER`, and the server answers with audio translated from
Riva, streamed as chunks complete. Without a live token it answers 403: no local process
can use it to spend the Bastion key.

Per request: validate (400s before anything goes upstream) -> plan voice, speed, chunks
-> Riva per chunk (`RIVA_CONCURRENCY` in flight, order kept) -> decode, stretch, encode
in a small thread pool (the event loop keeps serving other flows) -> stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from aiohttp import web

from bastion_edge.config.schema import TtsRules
from bastion_edge.errors import AUTHENTICATION, NOT_FOUND, SERVER_ERROR, ApiError, bad_request
from bastion_edge.local_app import start_local_app
from bastion_edge.one_shot_tokens import TokenRegistry
from bastion_edge.tts.reply import NOTE_HEADER, TTS_HEADER, SpeechReply, error_response
from bastion_edge.tts.riva_client import synthesize
from bastion_edge.tts.speech_plan import SpeechPlan, plan_speech
from bastion_edge.tts.speech_request import parse_speech_request
from bastion_edge.tts.transcoder import ChunkTranscoder

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-bastion-edge-tts-token"
SPEECH_PATH = "/v1/audio/speech"
RIVA_CONCURRENCY = 2  # Riva requests in flight per speech request
TRANSCODE_THREADS = 2
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class SpeechJob:
    riva_url: str  # full https URL of the Riva endpoint on the Bastion host
    bastion_key: str
    tts: TtsRules
    http_client: httpx.AsyncClient  # already configured with upstream TLS verification
    timeout_seconds: float  # per Riva request


class TtsAdapter:
    def __init__(self, token_ttl_seconds: float = 60.0, host: str = "127.0.0.1") -> None:
        self._host = host
        self._tokens: TokenRegistry[SpeechJob] = TokenRegistry(token_ttl_seconds)
        self._runner: web.AppRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.port: int | None = None
        # Counters for metrics (monotonic).
        self.requests = 0  # requests with a valid token
        self.chunks = 0  # Riva calls answered with audio
        self.transcode_seconds = 0.0  # thread time spent decoding/stretching/encoding
        self.audio_seconds = 0.0  # audio produced
        self.errors = 0  # requests answered with, or ended by, an error
        self.rejected_tokens = 0

    async def start(self) -> int:
        if self._runner is not None:
            raise RuntimeError("TtsAdapter already started")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(SPEECH_PATH, self._speech)
        app.router.add_route("*", "/{tail:.*}", _not_found)
        self._executor = ThreadPoolExecutor(TRANSCODE_THREADS, thread_name_prefix="bastion-tts")
        self._runner, self.port = await start_local_app(app, self._host)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def register(self, job: SpeechJob) -> str:
        """A one-shot token for one speech request; it expires unused after the TTL."""
        return self._tokens.issue(job)

    # -- request handling

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        job = self._tokens.take(request.headers.get(TOKEN_HEADER))
        if job is None:
            self.rejected_tokens += 1
            return error_response(ApiError(
                403, "This TTS endpoint only serves requests forwarded by bastion-edge.",
                "invalid_tts_token", AUTHENTICATION))
        self.requests += 1
        try:
            body = await request.read()
            plan = plan_speech(parse_speech_request(body), job.tts)
        except web.HTTPRequestEntityTooLarge:
            self.errors += 1
            return error_response(bad_request(
                f"The request body exceeds {MAX_BODY_BYTES} bytes.", "request_too_large",
                "input"))
        except ApiError as e:
            self.errors += 1
            return error_response(e)
        return await self._stream(request, job, plan)

    async def _stream(self, request: web.Request, job: SpeechJob,
                      plan: SpeechPlan) -> web.StreamResponse:
        transcoder = ChunkTranscoder(plan.request.response_format, plan.speed.atempo,
                                     job.tts.sample_rate_hz)
        headers = {TTS_HEADER: plan.summary()}
        if plan.notes():
            headers[NOTE_HEADER] = ", ".join(plan.notes())
        reply = SpeechReply(request, plan.request.stream_format == "sse",
                            transcoder.content_type, headers)
        try:
            async with contextlib.aclosing(self._synthesized(job, plan)) as chunks:
                async for riva_audio in chunks:
                    await reply.send(await self._transcode(transcoder.transcode, riva_audio))
            await reply.send(await self._transcode(transcoder.finish))
            await reply.finish(plan.input_tokens)
        except ConnectionError:  # the app (or mitmproxy) went away mid-stream
            self.errors += 1
        except Exception as e:
            self.errors += 1
            error = e if isinstance(e, ApiError) else _internal_error(e)
            if not reply.started:
                return error_response(error, headers)
            with contextlib.suppress(ConnectionError):
                await reply.fail(error)
        finally:
            self.audio_seconds += transcoder.audio_seconds
        return reply.response

    async def _synthesized(self, job: SpeechJob, plan: SpeechPlan) -> AsyncGenerator[bytes]:
        """Riva's audio for each chunk, in order, with up to RIVA_CONCURRENCY in flight."""
        texts = deque(plan.riva_texts)
        pending: deque[asyncio.Task[bytes]] = deque()
        try:
            while texts or pending:
                while texts and len(pending) < RIVA_CONCURRENCY:
                    pending.append(asyncio.create_task(synthesize(
                        job.http_client, job.riva_url, job.bastion_key, texts.popleft(),
                        plan.voice, job.tts.sample_rate_hz, job.timeout_seconds)))
                audio = await pending.popleft()
                self.chunks += 1
                yield audio
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _transcode[*A](self, fn: Callable[[*A], bytes], *args: *A) -> bytes:
        loop = asyncio.get_running_loop()
        result, elapsed = await loop.run_in_executor(
            self._executor, functools.partial(_timed, fn, *args))
        self.transcode_seconds += elapsed  # counted here, on the loop: no shared writes
        return result


def _timed[*A](fn: Callable[[*A], bytes], *args: *A) -> tuple[bytes, float]:
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def _internal_error(e: Exception) -> ApiError:
    """A bug or an FFmpeg failure: logged, and still answered as an envelope."""
    log.exception("TTS request failed", exc_info=e)
    return ApiError(500, f"Speech synthesis failed: {type(e).__name__}: {e}",
                    "tts_internal_error", SERVER_ERROR)


async def _not_found(request: web.Request) -> web.Response:
    return error_response(ApiError(404, f"No route {request.method} {request.path}.",
                                   "not_found", NOT_FOUND))
