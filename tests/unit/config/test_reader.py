"""config/reader.py: YAML read once, duplicate keys refused, errors on the key's own line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_edge.config.reader import Reader, RulesError, Section, field, read_sections
from bastion_edge.config.rules import parse_rules
from bastion_edge.config.store_url import check_store, store_location

SHIPPED_RULES = (Path(__file__).resolve().parents[3] / "rules.yaml").read_text()


def test_an_appended_top_level_section_is_refused_with_both_lines() -> None:
    text = SHIPPED_RULES + "\nusage:\n  currency: EUR\n"
    first = 1 + SHIPPED_RULES.splitlines().index(
        next(line for line in SHIPPED_RULES.splitlines() if line.startswith("usage:")))
    appended = len(SHIPPED_RULES.splitlines()) + 2
    with pytest.raises(RulesError) as refused:
        parse_rules(text)
    assert refused.value.location == "usage"
    assert refused.value.line == appended
    assert f"duplicate key (first on line {first})" in str(refused.value)


def test_a_second_models_block_is_refused() -> None:
    with pytest.raises(RulesError, match=r"^models: duplicate key \(first on line 1\).*"
                                         r"\(line 3\)$"):
        parse_rules("models:\n  gpt-4o: a\nmodels:\n  gpt-4o-mini: b\n")


def test_a_duplicate_nested_key_names_its_location() -> None:
    with pytest.raises(RulesError, match=r'^models\."gpt-4o": duplicate key.*\(line 3\)$'):
        parse_rules("models:\n  gpt-4o: a\n  gpt-4o: b\n")


def test_the_same_key_in_two_mappings_is_not_a_duplicate() -> None:
    rules = parse_rules("models:\n  gpt-4o: [{use: a, when: {app: x}}, {use: b, when: {app: y}}]\n")
    assert [c.use for c in rules.models[0].choices] == ["a", "b"]


@pytest.mark.parametrize(("text", "line"), [
    ("usgae:\n  stream_usage: true\n", 1),  # the value is on line 2; the key is on 1
    ("models: {gpt-4o: a}\nusgae:\n  currency: EUR\n", 2),
    ("tts:\n  pathh:\n    x: 1\n", 2),
])
def test_an_unknown_key_is_reported_on_its_own_line(text: str, line: int) -> None:
    with pytest.raises(RulesError, match="unknown key") as refused:
        parse_rules(text)
    assert refused.value.line == line


def test_a_section_is_declared_once_and_read_the_same_way() -> None:
    sections = (field("size", Reader.positive_integer),
                field("label", Reader.string, name="title", null_is_default=True),
                Section("pair", lambda r, v, p: {"a": r.mapping(v, p)["a"], "b": 2}))
    reader = Reader({("size",): 1, (): 1}, {("size",): 1})
    found = read_sections(reader, {"size": 3, "label": None, "pair": {"a": 1}}, sections)
    assert found == {"size": 3, "a": 1, "b": 2}
    with pytest.raises(RulesError, match=r"^size: expected a positive integer \(line 1\)$"):
        read_sections(reader, {"size": 0}, sections)
    with pytest.raises(RulesError, match="unknown key; expected one of size, label, pair"):
        read_sections(reader, {"other": 1}, sections)


@pytest.mark.parametrize("setting", ["sqlite", "sqlite:///var/lib/x.sqlite3",
                                     "redis://r:6379/0", "rediss://r:6380/0"])
def test_the_store_forms(setting: str) -> None:
    assert check_store(setting) == setting


def test_a_store_outside_the_forms_is_refused_the_same_way_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected sqlite, sqlite:///<absolute path> or a "
                                         r"redis:// \(rediss://\) URL, got 'memcached://x'"):
        store_location("memcached://x", tmp_path, "f.sqlite3")
    for section in ("responses_state", "batches"):
        with pytest.raises(RulesError, match=rf"^{section}\.store: expected sqlite"):
            parse_rules(f"{section}:\n  store: memcached://x\n")
    assert store_location("", tmp_path, "f.sqlite3") == f"sqlite://{tmp_path / 'f.sqlite3'}"


@pytest.mark.parametrize("text", ["models: &x\n  a: *x\n", "a: &l [1, *l]\n"])
def test_a_recursive_alias_is_a_rules_error(text: str) -> None:
    with pytest.raises(RulesError, match="recursive"):
        parse_rules(text)
