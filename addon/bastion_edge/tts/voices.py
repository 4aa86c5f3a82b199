"""Resolve an OpenAI voice (a name or a voice object's id) to a Riva voice.

Order: a name mapped in `tts.voices`; a Riva voice name passed through (it contains a
`.`, like `English-US.Female-1`, or the rules name it somewhere); else the default voice.
Without a default an unknown voice is a 400 naming `voice`.

The language sent with a voice: `tts.voice_languages[name]`, else what the name says
(`English-GB.Female-1` -> `en-GB`, `Magpie-Multilingual.ES-US.Diego` -> `es-US`), else
`tts.language_code`. Riva refuses a voice with a language it does not speak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bastion_edge.config.schema import TtsRules
from bastion_edge.errors import bad_request

VoiceSource = Literal["mapped", "riva", "default"]

# Riva names voices `<Language>-<REGION>.<Voice>`; these are its language names.
_LANGUAGES = {
    "arabic": "ar", "english": "en", "french": "fr", "german": "de", "hindi": "hi",
    "italian": "it", "japanese": "ja", "korean": "ko", "mandarin": "zh", "portuguese": "pt",
    "russian": "ru", "spanish": "es",
}
_NAMED_LOCALE = re.compile(r"^([A-Za-z]+)-([A-Z]{2})\b")
_CODE_LOCALE = re.compile(r"(?:^|\.)([A-Za-z]{2})-([A-Za-z]{2})\.")


@dataclass(frozen=True, slots=True)
class RivaVoice:
    name: str
    language_code: str
    ssml_supported: bool
    source: VoiceSource = "mapped"


def resolve_voice(requested: str, tts: TtsRules) -> RivaVoice:
    mapped = _mapped(requested, tts)
    if mapped is not None:
        return _riva_voice(mapped, tts, "mapped")
    if _is_riva_name(requested, tts):
        return _riva_voice(requested, tts, "riva")
    if tts.default_voice:
        return _riva_voice(tts.default_voice, tts, "default")
    raise bad_request(
        f"Unknown voice {requested!r}: it is not mapped in the rules' tts.voices, is not a "
        "Riva voice name, and no tts.default_voice is set.", "unknown_voice", "voice")


def _mapped(requested: str, tts: TtsRules) -> str | None:
    if requested in tts.voices:
        return tts.voices[requested]
    folded = requested.casefold()
    for name, riva in tts.voices.items():
        if name.casefold() == folded:
            return riva
    return None


def _is_riva_name(name: str, tts: TtsRules) -> bool:
    known = {*tts.voices.values(), *tts.voice_languages, *tts.no_ssml_voices}
    if tts.default_voice:
        known.add(tts.default_voice)
    return "." in name or name in known


def _riva_voice(name: str, tts: TtsRules, source: VoiceSource) -> RivaVoice:
    return RivaVoice(
        name=name,
        language_code=(tts.voice_languages.get(name) or language_from_name(name)
                       or tts.language_code),
        ssml_supported=name not in tts.no_ssml_voices,
        source=source,
    )


def language_from_name(name: str) -> str | None:
    """The BCP-47 code a Riva voice name states, if it states one."""
    named = _NAMED_LOCALE.match(name)
    if named and named.group(1).lower() in _LANGUAGES:
        return f"{_LANGUAGES[named.group(1).lower()]}-{named.group(2)}"
    coded = _CODE_LOCALE.search(name)
    if coded:
        return f"{coded.group(1).lower()}-{coded.group(2).upper()}"
    return None
