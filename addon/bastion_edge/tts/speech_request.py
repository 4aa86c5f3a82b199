"""Parse and validate an OpenAI `POST /v1/audio/speech` JSON body into a `SpeechRequest`.

Every refusal is a 400 envelope whose `param` names the offending field, raised before
anything goes upstream.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

from bastion_edge.errors import ApiError, bad_request

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
StreamFormat = Literal["audio", "sse"]

RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAM_FORMATS: tuple[StreamFormat, ...] = ("audio", "sse")
MAX_INPUT_CHARS = 4096
MIN_SPEED = 0.25
MAX_SPEED = 4.0


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    model: str
    input: str
    voice: str  # a name, or the `id` of a voice object
    response_format: ResponseFormat = "mp3"
    speed: float = 1.0
    stream_format: StreamFormat = "audio"
    instructions: str | None = None  # accepted and reported, not applied


def parse_speech_request(body: bytes) -> SpeechRequest:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"The request body is not valid JSON: {e}", "invalid_json") from e
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    return SpeechRequest(
        model=_required_string(data, "model"),
        input=_input(data),
        voice=_voice(data.get("voice")),
        response_format=_choice(data, "response_format", RESPONSE_FORMATS, "mp3"),
        speed=_speed(data.get("speed")),
        stream_format=_choice(data, "stream_format", STREAM_FORMATS, "audio"),
        instructions=_optional_string(data, "instructions"),
    )


def _missing(param: str) -> ApiError:
    return bad_request(f"Missing required parameter: '{param}'.", "missing_required_parameter",
                       param)


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return bad_request(message, code, param)


def _required_string(data: dict[str, object], param: str) -> str:
    value = data.get(param)
    if value is None:
        raise _missing(param)
    if not isinstance(value, str) or not value:
        raise _invalid(param, f"Invalid type for '{param}': expected a non-empty string.",
                       "invalid_type")
    return value


def _optional_string(data: dict[str, object], param: str) -> str | None:
    value = data.get(param)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(param, f"Invalid type for '{param}': expected a string.", "invalid_type")
    return value or None


def _input(data: dict[str, object]) -> str:
    value = data.get("input")
    if value is None:
        raise _missing("input")
    if not isinstance(value, str):
        raise _invalid("input", "Invalid type for 'input': expected a string.", "invalid_type")
    if not value.strip():
        raise _invalid("input", "Invalid 'input': the text to speak is empty.",
                       "string_below_min_length")
    if len(value) > MAX_INPUT_CHARS:
        raise _invalid("input", f"Invalid 'input': string too long. Expected a string with "
                       f"maximum length {MAX_INPUT_CHARS}, but got a string with length "
                       f"{len(value)} instead.", "string_above_max_length")
    return value


def _voice(value: object) -> str:
    if value is None:
        raise _missing("voice")
    if isinstance(value, dict):
        voice_id = value.get("id")
        if not isinstance(voice_id, str) or not voice_id:
            raise _invalid("voice", "Invalid 'voice': a voice object needs a string 'id'.")
        return voice_id
    if not isinstance(value, str) or not value:
        raise _invalid("voice", "Invalid 'voice': expected a voice name or an object "
                       "{\"id\": ...}.", "invalid_type")
    return value


def _choice[T: str](data: dict[str, object], param: str, options: tuple[T, ...], default: T) -> T:
    value = data.get(param)
    if value is None:
        return default
    for option in options:
        if value == option:
            return option
    raise _invalid(param, f"Invalid '{param}': {value!r}. Expected one of: "
                   f"{', '.join(options)}.")


def _speed(value: object) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("speed", "Invalid type for 'speed': expected a number.", "invalid_type")
    speed = float(value)
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise _invalid("speed", f"Invalid 'speed': {value}. Expected a number from "
                       f"{MIN_SPEED} to {MAX_SPEED}.")
    return speed
