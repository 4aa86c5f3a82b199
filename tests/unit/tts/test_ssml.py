import pytest

from bastion_edge.tts.ssml import SpeedPlan, plan_speed, riva_text, to_ssml


def test_ssml_escapes_markup_characters_and_quotes() -> None:
    ssml = to_ssml('Tom & "Jerry" <3 it\'s', 150)
    assert ssml == ('<speak><prosody rate="150%">Tom &amp; &quot;Jerry&quot; &lt;3 '
                    "it&apos;s</prosody></speak>")


def test_ssml_without_rate_has_no_prosody() -> None:
    assert to_ssml("a < b", None) == "<speak>a &lt; b</speak>"


@pytest.mark.parametrize(("speed", "plan"), [
    (0.25, SpeedPlan(25, 1.0)),
    (0.5, SpeedPlan(50, 1.0)),
    (1.0, SpeedPlan(None, 1.0)),
    (2.0, SpeedPlan(200, 1.0)),
    (2.5, SpeedPlan(250, 1.0)),
    (4.0, SpeedPlan(250, 1.6)),
])
def test_speed_goes_to_prosody_within_riva_range_then_atempo(speed: float,
                                                            plan: SpeedPlan) -> None:
    got = plan_speed(speed, ssml_supported=True)
    assert got.ssml_rate_percent == plan.ssml_rate_percent
    assert got.atempo == pytest.approx(plan.atempo)


@pytest.mark.parametrize("speed", [0.25, 0.5, 1.0, 2.0, 2.5, 4.0])
def test_without_ssml_everything_is_atempo(speed: float) -> None:
    assert plan_speed(speed, ssml_supported=False) == SpeedPlan(None, speed)


def test_rate_and_atempo_multiply_to_the_requested_speed() -> None:
    for speed in (0.25, 0.3, 0.77, 1.234, 2.49, 3.3, 4.0):
        rate, atempo = plan_speed(speed, True)
        assert rate is not None and 25 <= rate <= 250
        assert rate / 100 * atempo == pytest.approx(speed, rel=0.006)


def test_riva_text_is_plain_at_natural_rate_and_ssml_otherwise() -> None:
    assert riva_text("Hi & bye", None, True) == "Hi & bye"
    assert riva_text("Hi & bye", 200, True) == (
        '<speak><prosody rate="200%">Hi &amp; bye</prosody></speak>')
    assert riva_text("<speak>boom</speak>", None, True) == (
        "<speak>&lt;speak&gt;boom&lt;/speak&gt;</speak>")
    assert riva_text("Hi & bye", None, False) == "Hi & bye"
