import pytest

from bastion_edge.config.rules import TtsRules
from bastion_edge.errors import ApiError
from bastion_edge.tts.voices import RivaVoice, language_from_name, resolve_voice

RULES = TtsRules(
    default_voice="English-US.Female-1",
    language_code="en-US",
    voices={"alloy": "English-US.Female-1", "onyx": "English-US.Male-1",
            "voice_1234": "Spanish-US.Female-1", "plain": "SimpleVoice"},
    voice_languages={"Spanish-US.Female-1": "es-US"},
    no_ssml_voices=frozenset({"SimpleVoice"}),
)


def test_openai_name_mapped() -> None:
    assert resolve_voice("onyx", RULES) == RivaVoice("English-US.Male-1", "en-US", True, "mapped")


def test_openai_name_matched_case_insensitively() -> None:
    assert resolve_voice("Onyx", RULES).name == "English-US.Male-1"


def test_voice_object_id_mapped_with_its_language() -> None:
    assert resolve_voice("voice_1234", RULES) == RivaVoice(
        "Spanish-US.Female-1", "es-US", True, "mapped")


def test_riva_name_passes_through_with_the_language_its_name_states() -> None:
    assert resolve_voice("German-DE.Male-1", RULES) == RivaVoice(
        "German-DE.Male-1", "de-DE", True, "riva")


@pytest.mark.parametrize(("name", "language"), [
    ("English-GB.Female-1", "en-GB"),
    ("English-US-RadTTS.Female-1", "en-US"),
    ("Magpie-Multilingual.ES-US.Diego", "es-US"),
    ("Klingon-KX.Warrior", None),
    ("SimpleVoice", None),
])
def test_language_from_voice_name(name: str, language: str | None) -> None:
    assert language_from_name(name) == language


def test_configured_voice_language_wins_then_name_then_default() -> None:
    rules = TtsRules(language_code="fr-CA", voice_languages={"English-GB.Female-1": "en-IE"})
    assert resolve_voice("English-GB.Female-1", rules).language_code == "en-IE"
    assert resolve_voice("English-US.Male-1", rules).language_code == "en-US"
    assert resolve_voice("Some.Voice", rules).language_code == "fr-CA"


def test_known_riva_name_without_dot_passes_through_and_knows_no_ssml() -> None:
    assert resolve_voice("SimpleVoice", RULES) == RivaVoice("SimpleVoice", "en-US", False, "riva")
    assert resolve_voice("plain", RULES).ssml_supported is False


def test_unknown_voice_falls_back_to_default() -> None:
    assert resolve_voice("shimmer", RULES) == RivaVoice(
        "English-US.Female-1", "en-US", True, "default")


def test_unknown_voice_without_default_is_400_naming_voice() -> None:
    with pytest.raises(ApiError) as caught:
        resolve_voice("shimmer", TtsRules(default_voice=None))
    assert (caught.value.status, caught.value.param) == (400, "voice")
