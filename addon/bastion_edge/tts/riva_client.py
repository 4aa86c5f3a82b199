"""One Riva `text_to_audio` call over HTTP, with its failures as OpenAI envelopes.

    Riva 400/413/422      -> 400 riva_rejected_input (param `input`, upstream message)
    Riva 429              -> 429 rate_limit_exceeded (the SDKs back off and retry)
    other Riva 4xx        -> 502 riva_error (auth, path: the operator's to fix)
    Riva 5xx, connection,
    TLS, protocol errors  -> 502 riva_error / riva_unreachable
    timeout               -> 504 riva_timeout
    200 with no audio     -> 502 empty_audio
"""

from __future__ import annotations

import json

import httpx

from bastion_edge.errors import SERVER_ERROR, ApiError, bad_gateway, bad_request, gateway_timeout
from bastion_edge.tts.riva_contract import AudioEncoding
from bastion_edge.tts.voices import RivaVoice

_CLIENT_FAULT_STATUSES = (400, 413, 422)
_MAX_MESSAGE_CHARS = 300


def riva_payload(text: str, voice: RivaVoice, sample_rate: int) -> dict[str, object]:
    return {
        "text": text,
        "language_code": voice.language_code,
        "encoding": int(AudioEncoding.LINEAR_PCM),
        "sample_rate_hz": sample_rate,
        "voice_name": voice.name,
    }


async def synthesize(
    http: httpx.AsyncClient,
    url: str,
    key: str,
    text: str,
    voice: RivaVoice,
    sample_rate: int,
    timeout: float | None = None,
) -> bytes:
    """The audio bytes Riva answers for `text` (plain or SSML); ApiError on failure."""
    try:
        response = await http.post(
            url,
            json=riva_payload(text, voice, sample_rate),
            headers={"Authorization": f"Bearer {key}", "Accept": "audio/*, */*"},
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
    except httpx.TimeoutException as e:
        raise gateway_timeout(f"Riva TTS did not answer in time: {type(e).__name__}",
                              "riva_timeout") from e
    except httpx.TransportError as e:
        raise bad_gateway(f"Riva TTS unreachable: {type(e).__name__}: {e}",
                          "riva_unreachable") from e
    if response.status_code >= 400:
        raise upstream_error(response.status_code, response.content)
    if not response.content:
        raise bad_gateway("Riva TTS answered no audio.", "empty_audio")
    if _is_json(response):
        raise bad_gateway(f"Riva TTS answered JSON instead of audio: "
                          f"{_message(response.content)}", "riva_unexpected_reply")
    return response.content


def upstream_error(status: int, body: bytes) -> ApiError:
    message = f"Riva TTS answered {status}: {_message(body)}"
    if status in _CLIENT_FAULT_STATUSES:
        return bad_request(message, "riva_rejected_input", "input")
    if status == 429:
        return ApiError(429, message, "rate_limit_exceeded", "requests")
    return ApiError(502, message, "riva_error", SERVER_ERROR)


def _is_json(response: httpx.Response) -> bool:
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        json.loads(response.content)
    except ValueError:
        return False
    return True


def _message(body: bytes) -> str:
    """The upstream's own message: from an error envelope if there is one, else the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (
            error.get("message") if isinstance(error, dict) else error,
            data.get("message"), data.get("detail"),
        ):
            if isinstance(candidate, str) and candidate:
                text = candidate
                break
    text = " ".join(text.split()) or "(no body)"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "…"
