"""`POST /api/v1/tts/text_to_audio`: the Riva TTS contract, with real audio.

Request JSON: `text` (plain or SSML), `language_code` (defaults to the voice's),
`encoding` (required; only 1 LINEAR_PCM is produced here), `sample_rate_hz`
(8000..48000, default 44100), `voice_name` (default English-US.Female-1). Other fields
(`custom_dictionary`, `zero_shot_data`, ...) are ignored.

Reply: the audio bytes, framed by the sandbox's `riva_audio` setting or the request
header `x-sandbox-riva-audio`: `wav` (RIFF header, `audio/wav`), `wav-placeholder-sizes`
(RIFF size 0xFFFFFFFF and data size 0, `audio/wav`) or `pcm` (raw s16le mono,
`audio/pcm`). `x-sandbox-audio-seconds` says how long the audio is. A prosody rate
outside 25%-250% yields 200 with an EMPTY body, as Riva does.

Riva errors (this endpoint's own; auth and injected faults use the OpenAI envelope):

    HTTP 400  {"error": "<message>", "code": 3, "status": "INVALID_ARGUMENT"}

`code`/`status` are the gRPC status Riva would report (3 INVALID_ARGUMENT for every
validation failure, including audio longer than MAX_AUDIO_SECONDS_PER_REQUEST).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bastion_sandbox.config import CONFIG_KEY, RIVA_AUDIO_MODES
from bastion_sandbox.errors import BastionError
from bastion_sandbox.replies import dumps
from bastion_sandbox.ssml import SpeechTextError, parse_utterance
from bastion_sandbox.state import json_body
from bastion_sandbox.tone import synthesize, wav_header

TTS_PATH = "/api/v1/tts/text_to_audio"  # the contract: Bastion's TTS, not /v1/audio/speech
MAX_AUDIO_SECONDS_PER_REQUEST = 20.0  # NVIDIA documents about 20 s per offline request
LINEAR_PCM = 1
ENCODING_NAMES = {1: "LINEAR_PCM", 2: "FLAC", 3: "MULAW", 4: "OGGOPUS", 20: "ALAW"}

RIVA_AUDIO_HEADER = "x-sandbox-riva-audio"
AUDIO_SECONDS_HEADER = "x-sandbox-audio-seconds"
DEFAULT_SAMPLE_RATE = 44_100
SAMPLE_RATES = range(8_000, 48_001)
MAX_TEXT_CHARS = 10_000

# Voice -> tone frequency (Hz). Integers, so one second holds whole cycles.
VOICES: dict[str, int] = {
    "English-US.Female-1": 440,
    "English-US.Male-1": 220,
    "English-US.Female-Calm": 392,
    "English-US.Male-Calm": 196,
    "English-US.Female-Neutral": 415,
    "English-US.Male-Neutral": 208,
    "English-US.Female-Happy": 494,
    "English-US.Male-Happy": 247,
    "English-GB.Female-1": 466,
    "English-GB.Male-1": 233,
}
DEFAULT_VOICE = "English-US.Female-1"


class RivaError(Exception):
    def __init__(
        self,
        message: str,
        status: int = 400,
        grpc_code: int = 3,
        grpc_status: str = "INVALID_ARGUMENT",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.grpc_code = grpc_code
        self.grpc_status = grpc_status

    def response(self) -> web.Response:
        payload = {"error": self.message, "code": self.grpc_code, "status": self.grpc_status}
        return web.Response(
            body=dumps(payload), status=self.status, content_type="application/json"
        )


def voice_language(voice: str) -> str:
    """`English-US.Female-1` -> `en-US`."""
    region = voice.split(".", 1)[0].rsplit("-", 1)[-1]
    return f"en-{region}"


def _int_field(body: dict[str, Any], name: str, default: int | None) -> int:
    value = body.get(name, default)
    if value is None:
        raise RivaError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RivaError(f"{name} must be an integer, got {value!r}")
    return value


async def text_to_audio(request: web.Request) -> web.Response:
    try:
        return await _text_to_audio(request)
    except RivaError as err:
        return err.response()


async def _text_to_audio(request: web.Request) -> web.Response:
    try:
        body = await json_body(request)
    except BastionError as err:
        raise RivaError(err.message) from None
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RivaError("text is required and must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise RivaError(f"text is longer than {MAX_TEXT_CHARS} characters")
    voice = body.get("voice_name") or DEFAULT_VOICE
    if voice not in VOICES:
        raise RivaError(f"voice_name {voice!r} is not available; known: {', '.join(VOICES)}")
    language = body.get("language_code") or voice_language(voice)
    if language != voice_language(voice):
        raise RivaError(f"voice {voice} does not speak language_code {language!r}")
    encoding = _int_field(body, "encoding", None)
    if encoding != LINEAR_PCM:
        name = ENCODING_NAMES.get(encoding, str(encoding))
        raise RivaError(f"encoding {name} is not supported by the sandbox; use 1 (LINEAR_PCM)")
    sample_rate = _int_field(body, "sample_rate_hz", DEFAULT_SAMPLE_RATE) or DEFAULT_SAMPLE_RATE
    if sample_rate not in SAMPLE_RATES:
        raise RivaError(f"sample_rate_hz must be 8000..48000, got {sample_rate}")
    mode = request.headers.get(RIVA_AUDIO_HEADER) or request.app[CONFIG_KEY].riva_audio
    if mode not in RIVA_AUDIO_MODES:
        raise RivaError(f"{RIVA_AUDIO_HEADER} must be one of {', '.join(RIVA_AUDIO_MODES)}")
    try:
        utterance = parse_utterance(text)
    except SpeechTextError as err:
        raise RivaError(str(err)) from None
    content_type = "audio/pcm" if mode == "pcm" else "audio/wav"
    if utterance.rate_out_of_range:
        return web.Response(
            body=b"", content_type=content_type, headers={AUDIO_SECONDS_HEADER: "0"}
        )
    seconds = utterance.seconds
    if seconds > MAX_AUDIO_SECONDS_PER_REQUEST:
        raise RivaError(
            f"the audio would last {seconds:.2f} s; at most "
            f"{MAX_AUDIO_SECONDS_PER_REQUEST:g} s of audio per request"
        )
    pcm = synthesize(utterance, VOICES[voice], sample_rate)
    if mode != "pcm":
        pcm = wav_header(len(pcm), sample_rate, mode == "wav-placeholder-sizes") + pcm
    return web.Response(
        body=pcm,
        content_type=content_type,
        headers={AUDIO_SECONDS_HEADER: f"{seconds:.6f}"},
    )
