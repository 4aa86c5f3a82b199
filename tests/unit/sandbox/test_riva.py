"""The sandbox's Riva TTS endpoint: real audio whose length follows the text and SSML rate."""

from __future__ import annotations

import io
import itertools
import struct
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sandbox_support import AUTH, client_for, run_sandbox_thread

from bastion_edge.tts.riva_contract import DEFAULT_TTS_PATH
from bastion_sandbox import RunningSandbox, speech_seconds

RATE = 16_000
TEXT = "hello world, this is the sandbox"  # 32 characters: 2.1333 s at 100%


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client_for(sandbox, headers=AUTH) as c:
        yield c


def tts(
    client: httpx.Client, text: str, mode: str | None = None, **extra: object
) -> httpx.Response:
    body = {
        "text": text,
        "language_code": "en-US",
        "encoding": 1,
        "sample_rate_hz": RATE,
        "voice_name": "English-US.Female-1",
        **extra,
    }
    headers = {"x-sandbox-riva-audio": mode} if mode else {}
    return client.post(DEFAULT_TTS_PATH, json=body, headers=headers)


def wav_samples(data: bytes) -> tuple[int, array[int]]:
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.getframerate(), array("h", wav.readframes(wav.getnframes()))


def zero_crossing_hz(samples: array[int], rate: int) -> float:
    window = samples[:1600]  # inside the first word's tone
    crossings = sum(1 for a, b in itertools.pairwise(window) if (a < 0) != (b < 0))
    return crossings / 2 / (len(window) / rate)


def test_plain_text_duration_follows_characters(client: httpx.Client) -> None:
    response = tts(client, TEXT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    rate, samples = wav_samples(response.content)
    assert rate == RATE
    assert len(samples) == round(len(TEXT) / 15 * RATE)
    assert max(abs(s) for s in samples) > 5000  # not silence
    silent = sum(1 for s in samples if s == 0)
    assert 0.1 * len(samples) < silent < 0.5 * len(samples)  # words separated by gaps


@pytest.mark.parametrize(("rate", "factor"), [("50%", 2.0), ("200%", 0.5), ("100%", 1.0)])
def test_ssml_prosody_rate_scales_duration(client: httpx.Client, rate: str, factor: float) -> None:
    ssml = f'<speak><prosody rate="{rate}">{TEXT}</prosody></speak>'
    _, samples = wav_samples(tts(client, ssml).content)
    assert len(samples) == pytest.approx(len(TEXT) / 15 * factor * RATE, abs=2)


def test_ssml_out_of_range_rate_gives_empty_audio(client: httpx.Client) -> None:
    response = tts(client, f'<speak><prosody rate="300%">{TEXT}</prosody></speak>')
    assert response.status_code == 200
    assert response.content == b""


def test_ssml_with_escapes_and_break(client: httpx.Client) -> None:
    ssml = '<speak>Tom &amp; Jerry<break time="500ms"/>again</speak>'
    _, samples = wav_samples(tts(client, ssml).content)
    expected = (len("Tom & Jerry") + len("again")) / 15 + 0.5
    assert len(samples) == pytest.approx(expected * RATE, abs=2)
    assert speech_seconds(ssml) == pytest.approx(expected)


def test_audio_over_limit_is_riva_error(client: httpx.Client) -> None:
    response = tts(client, "x" * 301)  # 20.07 s
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 3 and body["status"] == "INVALID_ARGUMENT"
    assert "20" in body["error"]
    assert tts(client, "x" * 300).status_code == 200  # exactly 20 s is allowed


def test_pcm_mode_has_no_header(client: httpx.Client) -> None:
    wav = tts(client, TEXT, "wav").content
    pcm = tts(client, TEXT, "pcm")
    assert pcm.headers["content-type"] == "audio/pcm"
    assert not pcm.content.startswith(b"RIFF")
    assert pcm.content == wav[44:]


def test_placeholder_sizes_mode(client: httpx.Client) -> None:
    data = tts(client, TEXT, "wav-placeholder-sizes").content
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert data[36:40] == b"data" and struct.unpack("<I", data[40:44])[0] == 0
    assert len(data) - 44 == 2 * round(len(TEXT) / 15 * RATE)


def test_configured_default_mode_is_pcm(tmp_path: Path) -> None:
    for sandbox in run_sandbox_thread(tmp_path, riva_audio="pcm"):
        with client_for(sandbox, headers=AUTH) as c:
            response = tts(c, TEXT)
        assert response.headers["content-type"] == "audio/pcm"
        assert len(response.content) == 2 * round(len(TEXT) / 15 * RATE)


def test_voice_sets_pitch(client: httpx.Client) -> None:
    female = zero_crossing_hz(wav_samples(tts(client, TEXT).content)[1], RATE)
    male_audio = tts(client, TEXT, voice_name="English-US.Male-1").content
    male = zero_crossing_hz(wav_samples(male_audio)[1], RATE)
    assert female == pytest.approx(440, rel=0.05)
    assert male == pytest.approx(220, rel=0.05)


@pytest.mark.parametrize(
    "extra",
    [
        {"voice_name": "English-US.Nobody"},
        {"encoding": 2},
        {"encoding": 99},
        {"sample_rate_hz": 1000},
        {"language_code": "de-DE"},
        {"text": "   "},
        {"text": "<speak><prosody rate='50%'>unclosed</speak>"},
    ],
)
def test_invalid_requests_are_riva_errors(client: httpx.Client, extra: dict[str, object]) -> None:
    body = {"text": TEXT, **extra}
    response = tts(client, str(body.pop("text")), **body)
    assert response.status_code == 400
    error = response.json()
    assert isinstance(error["error"], str) and error["code"] == 3


def test_riva_requires_auth(sandbox: RunningSandbox) -> None:
    with client_for(sandbox) as c:
        response = c.post(DEFAULT_TTS_PATH, json={"text": "x", "encoding": 1})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
