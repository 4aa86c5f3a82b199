"""From a validated `SpeechRequest` and the TTS rules to what will be asked of Riva."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bastion_edge.config.schema import TtsRules
from bastion_edge.core.facts import CHARS_PER_TOKEN
from bastion_edge.tts.chunking import chunk_text, max_chunk_chars
from bastion_edge.tts.speech_request import SpeechRequest
from bastion_edge.tts.ssml import SpeedPlan, plan_speed, riva_text
from bastion_edge.tts.voices import RivaVoice, resolve_voice


@dataclass(frozen=True, slots=True)
class SpeechPlan:
    request: SpeechRequest
    voice: RivaVoice
    speed: SpeedPlan
    chunks: tuple[str, ...]  # slices of the input, in order

    @property
    def riva_texts(self) -> tuple[str, ...]:
        """The `text` of each Riva request: plain text or SSML."""
        return tuple(riva_text(chunk, self.speed.ssml_rate_percent, self.voice.ssml_supported)
                     for chunk in self.chunks)

    @property
    def input_tokens(self) -> int:
        return max(1, math.ceil(len(self.request.input) / CHARS_PER_TOKEN))

    def summary(self) -> str:
        """The `x-bastion-edge-tts` header value."""
        rate = self.speed.ssml_rate_percent
        model = self.request.model.replace(";", "")
        return (f"riva_voice={self.voice.name};model={model};chunks={len(self.chunks)};"
                f"characters={len(self.request.input)};"
                f"ssml_rate={'none' if rate is None else f'{rate}%'};"
                f"atempo={self.speed.atempo:.4g}")

    def notes(self) -> tuple[str, ...]:
        """Differences from what OpenAI would have done, for `x-bastion-edge-note`."""
        notes = []
        if self.request.instructions:
            notes.append("instructions-ignored")
        if self.voice.source == "default":
            notes.append("voice-defaulted")
        return tuple(notes)


def plan_speech(request: SpeechRequest, tts: TtsRules) -> SpeechPlan:
    voice = resolve_voice(request.voice, tts)
    speed = plan_speed(request.speed, voice.ssml_supported)
    chunks = chunk_text(request.input, max_chunk_chars(speed.ssml_rate_percent))
    return SpeechPlan(request, voice, speed, tuple(chunks))
