"""rules.yaml `responses_state:`: defaults, accepted forms, errors with locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_edge.config.rules import ResponsesStateRules, RulesError, load_rules, parse_rules

SHIPPED_RULES = Path(__file__).resolve().parents[3] / "rules.yaml"


def test_defaults_keep_thirty_days_in_sqlite() -> None:
    state = parse_rules("{}").responses_state
    assert state == ResponsesStateRules()
    assert (state.store, state.ttl_seconds, state.max_responses) == ("sqlite", 2592000, 100000)
    assert state.encryption_key_env is None


def test_shipped_rules_document_the_section() -> None:
    assert load_rules(SHIPPED_RULES).responses_state == ResponsesStateRules()
    assert "encryption_key_env" in SHIPPED_RULES.read_text()


def test_redis_ttl_cap_and_key_env() -> None:
    state = parse_rules(
        "responses_state:\n  store: redis://cache:6379/1\n  ttl_seconds: 3600\n"
        "  max_responses: null\n  encryption_key_env: RESPONSES_KEY\n").responses_state
    assert state == ResponsesStateRules("redis://cache:6379/1", 3600.0, None, "RESPONSES_KEY")
    assert parse_rules("responses_state: {ttl_seconds: null}").responses_state.ttl_seconds is None


@pytest.mark.parametrize(("text", "location", "message"), [
    ("responses_state:\n  store: memcached://x\n", "responses_state.store", "redis://"),
    ("responses_state:\n  ttl_seconds: -1\n", "responses_state.ttl_seconds", "positive"),
    ("responses_state:\n  max_responses: 1.5\n", "responses_state.max_responses", "integer"),
    ("responses_state:\n  encryption_key_env: 'not a name'\n",
     "responses_state.encryption_key_env", "environment variable"),
    ("responses_state:\n  stor: sqlite\n", "responses_state.stor", "unknown key"),
])
def test_errors_name_their_location_and_line(text: str, location: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    assert info.value.location == location and info.value.line == 2
    assert message in str(info.value)
