"""The rules loader under arbitrary YAML and text: Rules or RulesError, nothing else."""

from __future__ import annotations

import contextlib
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from strategies import JSON_VALUES

from bastion_edge.config.rules import RulesError, parse_rules

SECTIONS = st.sampled_from([
    "upstream", "intercept", "keys", "models", "unmapped_models", "reply_model", "tts",
    "cutover", "responses_state", "fallbacks", "capabilities", "models_refresh_seconds",
    "clients", "egress", "embedding_dimensions", "limits", "unknown"])


@given(st.dictionaries(SECTIONS, JSON_VALUES, max_size=4), st.booleans())
def test_yaml_trees_load_or_fail_with_a_location(tree: dict[str, Any], allow_empty: bool) -> None:
    try:
        text = yaml.safe_dump(tree, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        parse_rules(text, allow_empty=allow_empty)
    except RulesError as e:
        assert str(e)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_load_or_fail_cleanly(raw: bytes) -> None:
    with contextlib.suppress(RulesError):
        parse_rules(raw, allow_empty=False)
