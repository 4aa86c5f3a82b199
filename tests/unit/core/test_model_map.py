"""ModelMap.resolve: exact ids before globs, globs in file order, first matching choice."""

from __future__ import annotations

from bastion_edge.config.rules import parse_rules
from bastion_edge.core.facts import CHAT, RequestFacts
from bastion_edge.core.model_map import ModelMap, Resolution

PLAIN = RequestFacts(CHAT)


def _map(text: str) -> ModelMap:
    return ModelMap(parse_rules(text))


def test_exact_id_wins_over_earlier_glob() -> None:
    models = _map('models:\n  "gpt-4o*": from-glob\n  gpt-4o-mini: from-exact\n')
    assert models.resolve("gpt-4o-mini", PLAIN) == Resolution(
        "gpt-4o-mini", "from-exact", "gpt-4o-mini", 0)
    assert models.resolve("gpt-4o-2024", PLAIN) == Resolution(
        "gpt-4o-2024", "from-glob", "gpt-4o*", 0)


def test_globs_tried_in_file_order() -> None:
    models = _map('models:\n  "gpt-4o-mini-*": small\n  "gpt-4o-*": big\n  "gpt-*": any\n')
    assert models.resolve("gpt-4o-mini-tts", PLAIN).upstream == "small"
    assert models.resolve("gpt-4o-audio", PLAIN).upstream == "big"
    assert models.resolve("gpt-3.5-turbo", PLAIN).upstream == "any"

    reordered = _map('models:\n  "gpt-*": any\n  "gpt-4o-mini-*": small\n')
    assert reordered.resolve("gpt-4o-mini-tts", PLAIN).upstream == "any"


def test_glob_is_case_sensitive_and_supports_classes() -> None:
    models = _map('models:\n  "o[13]-*": reasoning\n')
    assert models.resolve("o1-preview", PLAIN).upstream == "reasoning"
    assert models.resolve("o3-mini", PLAIN).upstream == "reasoning"
    assert models.resolve("o2-mini", PLAIN) is None
    assert models.resolve("O1-preview", PLAIN) is None


def test_first_matching_choice_wins() -> None:
    models = _map(
        "models:\n"
        "  gpt-4o:\n"
        "    - {when: {has_image: true}, use: vision}\n"
        "    - {when: {header: {x-bastion-route: coding}}, use: coder}\n"
        "    - {use: general}\n"
    )
    both = RequestFacts(CHAT, headers={"x-bastion-route": "coding"}, has_image=True)
    assert models.resolve("gpt-4o", both) == Resolution("gpt-4o", "vision", "gpt-4o", 0)
    coder = RequestFacts(CHAT, headers={"x-bastion-route": "coding"})
    assert models.resolve("gpt-4o", coder) == Resolution("gpt-4o", "coder", "gpt-4o", 1)
    assert models.resolve("gpt-4o", PLAIN) == Resolution("gpt-4o", "general", "gpt-4o", 2)


def test_exact_entry_without_matching_choice_falls_back_to_glob() -> None:
    models = _map(
        "models:\n"
        "  gpt-4o:\n"
        "    - {when: {has_image: true}, use: vision}\n"
        '  "gpt-*": fallback\n'
    )
    assert models.resolve("gpt-4o", RequestFacts(CHAT, has_image=True)).upstream == "vision"
    assert models.resolve("gpt-4o", PLAIN) == Resolution("gpt-4o", "fallback", "gpt-*", 0)


def test_no_match_returns_none() -> None:
    models = _map("models:\n  gpt-4o:\n    - {when: {has_image: true}, use: vision}\n")
    assert models.resolve("gpt-4o", PLAIN) is None
    assert models.resolve("claude-3", PLAIN) is None
    assert _map("").resolve("gpt-4o", PLAIN) is None


def test_resolution_changed_flag() -> None:
    models = _map("models:\n  gpt-4o: gpt-oss-120b\n  same: same\n")
    assert models.resolve("gpt-4o", PLAIN).changed is True
    assert models.resolve("same", PLAIN).changed is False


def test_is_bastion_model_only_for_targets_that_are_not_sources() -> None:
    models = _map("models:\n  gpt-4o: gpt-oss-120b\n  loop: loop\n"
                  "  x:\n    - {when: {has_image: true}, use: vl}\n")
    assert models.is_bastion_model("gpt-oss-120b")
    assert models.is_bastion_model("vl")  # targets inside conditional choices count
    assert not models.is_bastion_model("gpt-4o")
    assert not models.is_bastion_model("loop")  # also a source id
    assert not models.is_bastion_model("unknown")
