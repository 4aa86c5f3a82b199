import pytest
from tts_fakes import container_bytes, decode, tone, wav_bytes

from bastion_edge.tts.audio import Pcm, atempo_stages, fade_edges, resample, time_stretch
from bastion_edge.tts.audio_decode import AudioDecodeError, decode_riva_audio, sniff
from bastion_edge.tts.audio_encode import CONTENT_TYPES, StreamingEncoder, encode

RATE = 22050
PCM = tone(2.0, RATE)


@pytest.mark.parametrize(("data", "kind"), [
    (wav_bytes(PCM, RATE), "wav"),
    (container_bytes(PCM, RATE, "ogg", "libopus", 48000), "ogg"),
    (container_bytes(PCM, RATE, "flac", "flac"), "flac"),
    (PCM, "raw"),
    (b"", "raw"),
])
def test_sniff(data: bytes, kind: str) -> None:
    assert sniff(data) == kind


def test_decode_wav_exact() -> None:
    assert decode_riva_audio(wav_bytes(PCM, 16000), RATE) == Pcm(PCM, 16000)


@pytest.mark.parametrize("placeholder", [0xFFFFFFFF, 0])
def test_decode_wav_with_placeholder_sizes_takes_the_rest_as_samples(placeholder: int) -> None:
    data = wav_bytes(PCM, RATE, placeholder=placeholder, extra_chunk=True)
    assert decode_riva_audio(data, 8000) == Pcm(PCM, RATE)


def test_decode_wav_data_size_beyond_the_end_is_clamped() -> None:
    data = wav_bytes(PCM, RATE)[:-101]  # truncated, odd length
    pcm = decode_riva_audio(data, RATE)
    assert pcm.samples == (len(PCM) - 101) // 2


def test_decode_stereo_wav_downmixed_to_mono() -> None:
    stereo = b"".join(PCM[i : i + 2] * 2 for i in range(0, len(PCM), 2))
    pcm = decode_riva_audio(wav_bytes(stereo, RATE, channels=2), RATE)
    assert pcm.rate == RATE and pcm.samples == len(PCM) // 2


def test_decode_raw_pcm_at_the_requested_rate() -> None:
    assert decode_riva_audio(PCM + b"\x01", 16000) == Pcm(PCM, 16000)


def test_decode_flac() -> None:
    pcm = decode_riva_audio(container_bytes(PCM, RATE, "flac", "flac"), 8000)
    assert pcm == Pcm(PCM, RATE)  # lossless


def test_decode_ogg_opus() -> None:
    pcm = decode_riva_audio(container_bytes(PCM, RATE, "ogg", "libopus", 48000), 8000)
    assert pcm.rate == 48000
    assert pcm.seconds == pytest.approx(2.0, rel=0.05)


def test_corrupt_container_is_a_decode_error() -> None:
    with pytest.raises(AudioDecodeError):
        decode_riva_audio(b"OggS" + b"\x00" * 200, RATE)


@pytest.mark.parametrize(("fmt", "codecs", "rate"), [
    ("mp3", {"mp3", "mp3float"}, 24000),
    ("opus", {"opus", "libopus"}, 48000),
    ("aac", {"aac"}, 24000),
    ("flac", {"flac"}, 24000),
    ("wav", {"pcm_s16le"}, 24000),
])
def test_encode_each_format_decodes_back(fmt: str, codecs: set[str], rate: int) -> None:
    data = encode(Pcm(tone(3.0, RATE), RATE), fmt)  # type: ignore[arg-type]
    decoded = decode(data)
    assert decoded.codec in codecs and decoded.rate == rate
    assert decoded.seconds == pytest.approx(3.0, rel=0.05)


def test_encode_pcm_is_raw_24khz_s16() -> None:
    data = encode(Pcm(tone(3.0, RATE), RATE), "pcm")
    assert len(data) / 2 / 24000 == pytest.approx(3.0, rel=0.01)
    assert not data.startswith(b"RIFF")


def test_content_types() -> None:
    assert CONTENT_TYPES == {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                             "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_streaming_encoder_emits_bytes_per_chunk_and_joins_them(fmt: str) -> None:
    encoder = StreamingEncoder(fmt)  # type: ignore[arg-type]
    parts = [encoder.feed(Pcm(tone(2.0, RATE), RATE)) for _ in range(3)]
    parts.append(encoder.flush())
    assert all(parts[:3]), "every chunk yields audio before the stream ends"
    data = b"".join(parts)
    seconds = len(data) / 48000 if fmt == "pcm" else decode(data).seconds
    assert seconds == pytest.approx(6.0, rel=0.05)


def test_streaming_encoder_accepts_a_chunk_at_another_rate() -> None:
    encoder = StreamingEncoder("wav")
    data = encoder.feed(Pcm(tone(1.0, RATE), RATE)) + encoder.feed(Pcm(tone(1.0, 16000), 16000))
    data += encoder.flush()
    assert decode(data).seconds == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize(("factor", "expected"), [(0.5, 4.0), (2.0, 1.0), (4.0, 0.5),
                                                  (0.25, 8.0), (1.6, 1.25)])
def test_time_stretch_changes_duration(factor: float, expected: float) -> None:
    stretched = time_stretch(Pcm(PCM, RATE), factor)
    assert stretched.rate == RATE
    assert stretched.seconds == pytest.approx(expected, rel=0.05)


def test_atempo_stages_stay_within_half_and_double() -> None:
    for factor in (0.25, 0.3, 0.5, 1.0, 1.6, 2.0, 3.0, 4.0):
        stages = atempo_stages(factor)
        assert all(0.5 <= s <= 2.0 for s in stages)
        product = 1.0
        for s in stages:
            product *= s
        assert product == pytest.approx(factor)


def test_resample_and_join() -> None:
    joined = Pcm.join([Pcm(tone(1.0, RATE), RATE), Pcm(tone(1.0, 16000), 16000)])
    assert joined.rate == RATE and joined.seconds == pytest.approx(2.0, rel=0.01)
    assert resample(Pcm(PCM, RATE), 24000).seconds == pytest.approx(2.0, rel=0.01)


def test_fade_edges_silences_the_ends_only() -> None:
    loud = Pcm(b"\xff\x7f" * 1000, 8000)
    faded = fade_edges(loud)
    assert faded.data[:2] == b"\x00\x00" and faded.data[-2:] == b"\x00\x00"
    assert faded.data[1000:1002] == b"\xff\x7f" and faded.samples == 1000
