"""`check --live`'s rows: what would serve each mapped id given a live list."""

from __future__ import annotations

from bastion_edge.cli.live_check import format_rows, live_rows, needs_of_condition
from bastion_edge.config.rules import Condition, parse_rules
from bastion_edge.core.model_availability import NO_NEEDS, RequestNeeds

RULES = parse_rules("""
models:
  gpt-4o:
    - when: {has_image: true}
      use: Qwen2.5-VL-72B-Instruct
    - when: {prompt_tokens_over: 40000}
      use: Meta-Llama-3_3-70B-Instruct
    - use: gpt-oss-120b
  gpt-4o-mini: gpt-oss-20b
fallbacks:
  gpt-oss-120b: [Meta-Llama-3_3-70B-Instruct]
  gpt-oss-20b: [Llama-3.1-8B-Instruct]
  Meta-Llama-3_3-70B-Instruct: [gpt-oss-120b]
capabilities:
  gpt-oss-120b: {vision: false, context_tokens: 32768}
  Meta-Llama-3_3-70B-Instruct: {vision: false, context_tokens: 131072}
""")
ALL = {"Qwen2.5-VL-72B-Instruct", "Meta-Llama-3_3-70B-Instruct", "gpt-oss-120b",
       "gpt-oss-20b", "Llama-3.1-8B-Instruct"}


def test_needs_of_condition() -> None:
    assert needs_of_condition(Condition()) == NO_NEEDS
    assert needs_of_condition(Condition(has_image=True)) == RequestNeeds(vision=True)
    assert needs_of_condition(Condition(prompt_tokens_over=100)) == RequestNeeds(
        prompt_tokens=101)


def test_everything_listed_serves_its_target() -> None:
    rows = live_rows(RULES, ALL)
    assert [(r.openai_id, r.target, r.listed, r.serving) for r in rows] == [
        ("gpt-4o", "Qwen2.5-VL-72B-Instruct", True, "Qwen2.5-VL-72B-Instruct"),
        ("gpt-4o", "Meta-Llama-3_3-70B-Instruct", True, "Meta-Llama-3_3-70B-Instruct"),
        ("gpt-4o", "gpt-oss-120b", True, "gpt-oss-120b"),
        ("gpt-4o-mini", "gpt-oss-20b", True, "gpt-oss-20b"),
    ]


def test_unlisted_target_shows_its_fallback_and_why() -> None:
    rows = live_rows(RULES, ALL - {"gpt-oss-20b"})
    mini = rows[-1]
    assert (mini.listed, mini.serving) == (False, "Llama-3.1-8B-Instruct")
    assert mini.note == "fallback: gpt-oss-20b unlisted"


def test_long_context_choice_does_not_fall_back_to_a_smaller_window() -> None:
    rows = live_rows(RULES, ALL - {"Meta-Llama-3_3-70B-Instruct"})
    long_row = rows[1]
    assert long_row.serving is None
    assert long_row.note == "neither it nor a fallback is listed"
    assert rows[2].serving == "gpt-oss-120b"


def test_vision_choice_without_a_vision_model_is_none() -> None:
    rules = parse_rules("models:\n  gpt-4o:\n    - when: {has_image: true}\n"
                        "      use: gpt-oss-120b\ncapabilities:\n  gpt-oss-120b: {vision: false}\n")
    [row] = live_rows(rules, ALL)
    assert row.serving is None
    assert "vision" in row.note


def test_format_marks_unlisted_and_none() -> None:
    text = format_rows(live_rows(RULES, {"Llama-3.1-8B-Instruct"}), lambda c: "-")
    assert "NONE" in text and " NO " in text
