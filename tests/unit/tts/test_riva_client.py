import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from bastion_edge.errors import ApiError
from bastion_edge.tts.riva_client import synthesize
from bastion_edge.tts.voices import RivaVoice

VOICE = RivaVoice("English-US.Female-1", "en-US", True)
URL = "https://bastion.test/api/v1/tts/text_to_audio"


def call(handler: Callable[[httpx.Request], httpx.Response]) -> bytes:
    async def run() -> bytes:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await synthesize(http, URL, "sk-bastion", "Hello.", VOICE, 22050, 5.0)
    return asyncio.run(run())


def failure(handler: Callable[[httpx.Request], httpx.Response]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(handler)
    return caught.value


def test_posts_riva_json_with_bearer_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"\x01\x00" * 10)

    assert call(handler) == b"\x01\x00" * 10
    request = seen[0]
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["authorization"] == "Bearer sk-bastion"
    assert json.loads(request.content) == {
        "text": "Hello.", "language_code": "en-US", "encoding": 1, "sample_rate_hz": 22050,
        "voice_name": "English-US.Female-1"}


def test_riva_400_is_a_400_with_the_upstream_message() -> None:
    error = failure(lambda r: httpx.Response(400, json={"error": {"message": "bad SSML"}}))
    assert (error.status, error.param, error.code) == (400, "input", "riva_rejected_input")
    assert "bad SSML" in error.message


@pytest.mark.parametrize("status", [401, 403, 404])
def test_other_riva_4xx_is_a_502(status: int) -> None:
    error = failure(lambda r: httpx.Response(status, text="nope"))
    assert (error.status, error.code) == (502, "riva_error") and "nope" in error.message


def test_riva_429_stays_429() -> None:
    assert failure(lambda r: httpx.Response(429, json={"message": "slow down"})).status == 429


def test_riva_5xx_is_a_502() -> None:
    error = failure(lambda r: httpx.Response(503, json={"detail": "model loading"}))
    assert error.status == 502 and "model loading" in error.message


def test_empty_audio_is_a_502() -> None:
    error = failure(lambda r: httpx.Response(200, content=b""))
    assert (error.status, error.code) == (502, "empty_audio")


def test_json_instead_of_audio_is_a_502() -> None:
    error = failure(lambda r: httpx.Response(200, json={"error": "oops"}))
    assert error.status == 502 and "oops" in error.message


def raises(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc
    return handler


def test_timeout_is_a_504() -> None:
    error = failure(raises(httpx.ReadTimeout("slow")))
    assert (error.status, error.code) == (504, "riva_timeout")


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"),
                                 httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]"),
                                 httpx.RemoteProtocolError("closed")])
def test_connection_and_tls_errors_are_502(exc: Exception) -> None:
    error = failure(raises(exc))
    assert (error.status, error.code) == (502, "riva_unreachable")
