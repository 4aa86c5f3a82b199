"""Riva reply bytes of one chunk -> encoded bytes of the reply, chunk after chunk.

Synchronous and CPU-bound: the adapter calls it off the event loop, one call at a time
per request.
"""

from __future__ import annotations

from bastion_edge.errors import bad_gateway
from bastion_edge.tts.audio import fade_edges, time_stretch
from bastion_edge.tts.audio_decode import AudioDecodeError, decode_riva_audio
from bastion_edge.tts.audio_encode import StreamingEncoder
from bastion_edge.tts.speech_request import ResponseFormat


class ChunkTranscoder:
    def __init__(self, fmt: ResponseFormat, atempo: float, riva_rate: int) -> None:
        self._encoder = StreamingEncoder(fmt)
        self._atempo = atempo
        self._riva_rate = riva_rate
        self.audio_seconds = 0.0  # of encoded output so far

    @property
    def content_type(self) -> str:
        return self._encoder.content_type

    def transcode(self, riva_audio: bytes) -> bytes:
        try:
            pcm = decode_riva_audio(riva_audio, self._riva_rate)
        except AudioDecodeError as e:
            raise bad_gateway(f"Riva TTS answered undecodable audio: {e}",
                              "riva_bad_audio") from e
        if not pcm.samples:
            raise bad_gateway("Riva TTS answered no audio samples.", "empty_audio")
        pcm = time_stretch(fade_edges(pcm), self._atempo)
        self.audio_seconds += pcm.seconds
        return self._encoder.feed(pcm)

    def finish(self) -> bytes:
        return self._encoder.flush()
