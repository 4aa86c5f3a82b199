"""Facts of NVIDIA Riva's HTTP TTS contract, shared by the TTS adapter and the sandbox.

`POST /api/v1/tts/text_to_audio` with JSON `text`, `language_code`, `encoding`,
`sample_rate_hz`, `voice_name`; the reply body is the audio bytes.
"""

from __future__ import annotations

from enum import IntEnum

from bastion_edge.config.schema import DEFAULT_TTS_PATH as DEFAULT_TTS_PATH

# NVIDIA documents about 20 s of audio per offline request.
MAX_AUDIO_SECONDS_PER_REQUEST = 20.0

# SSML <prosody rate> bounds Riva accepts; outside them it returns no audio.
SSML_RATE_MIN_PERCENT = 25
SSML_RATE_MAX_PERCENT = 250


class AudioEncoding(IntEnum):
    """Riva's AudioEncoding enum values."""

    LINEAR_PCM = 1
    FLAC = 2
    MULAW = 3
    OGGOPUS = 4
    ALAW = 20
