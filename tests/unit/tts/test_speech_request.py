import json

import pytest

from bastion_edge.errors import ApiError
from bastion_edge.tts.speech_request import SpeechRequest, parse_speech_request


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"model": "tts-1", "input": "Hello there.", "voice": "alloy"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_minimal_request_gets_openai_defaults() -> None:
    assert parse_speech_request(body()) == SpeechRequest(
        model="tts-1", input="Hello there.", voice="alloy", response_format="mp3", speed=1.0,
        stream_format="audio", instructions=None)


def test_all_fields_parsed() -> None:
    request = parse_speech_request(body(
        voice={"id": "voice_1234"}, response_format="opus", speed=2, stream_format="sse",
        instructions="Speak cheerfully."))
    assert request.voice == "voice_1234"
    assert (request.response_format, request.speed, request.stream_format) == ("opus", 2.0, "sse")
    assert request.instructions == "Speak cheerfully."


@pytest.mark.parametrize(("fields", "param"), [
    ({"model": ...}, "model"),
    ({"model": 5}, "model"),
    ({"input": ...}, "input"),
    ({"input": ""}, "input"),
    ({"input": "   \n"}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({"input": ["a"]}, "input"),
    ({"voice": ...}, "voice"),
    ({"voice": ""}, "voice"),
    ({"voice": 3}, "voice"),
    ({"voice": {"name": "alloy"}}, "voice"),
    ({"response_format": "ogg"}, "response_format"),
    ({"response_format": "MP3"}, "response_format"),
    ({"speed": 0.2}, "speed"),
    ({"speed": 4.01}, "speed"),
    ({"speed": "fast"}, "speed"),
    ({"speed": True}, "speed"),
    ({"stream_format": "chunks"}, "stream_format"),
    ({"instructions": 7}, "instructions"),
])
def test_each_bad_field_is_a_400_naming_it(fields: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_speech_request(body(**fields))
    error = caught.value
    assert (error.status, error.param, error.type) == (400, param, "invalid_request_error")
    assert json.loads(error.body())["error"]["param"] == param


def test_input_of_exactly_4096_chars_accepted() -> None:
    assert len(parse_speech_request(body(input="y" * 4096)).input) == 4096


@pytest.mark.parametrize("speed", [0.25, 4.0, 4])
def test_speed_bounds_inclusive(speed: float) -> None:
    assert parse_speech_request(body(speed=speed)).speed == float(speed)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_a_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_speech_request(raw)
    assert caught.value.status == 400 and caught.value.code == "invalid_json"


def test_nan_speed_rejected() -> None:
    with pytest.raises(ApiError) as caught:
        parse_speech_request(b'{"model":"tts-1","input":"hi","voice":"alloy","speed":NaN}')
    assert caught.value.param == "speed"
