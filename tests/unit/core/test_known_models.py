"""The shipped rules map every known OpenAI id family to the guide's classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_edge.cli import main as cli
from bastion_edge.config.rules import load_rules
from bastion_edge.core.facts import CHAT, RequestFacts
from bastion_edge.core.known_models import coverage, known_openai_ids
from bastion_edge.core.model_map import ModelMap

SHIPPED = Path(__file__).resolve().parents[3] / "rules.yaml"
PLAIN = RequestFacts(CHAT)
GENERAL, COST, CODING = "gpt-oss-120b", "gpt-oss-20b", "Qwen3-Coder-30B-A3B-Instruct"


@pytest.fixture(scope="module")
def models() -> ModelMap:
    return ModelMap(load_rules(SHIPPED))


def test_every_known_id_has_a_mapping(models: ModelMap) -> None:
    unmapped = [m for m in known_openai_ids() if models.resolve(m, PLAIN) is None]
    assert unmapped == []


@pytest.mark.parametrize(("model", "target"), [
    ("gpt-4.1", GENERAL), ("gpt-4.1-2025-04-14", GENERAL), ("gpt-4.1-mini", COST),
    ("gpt-4.1-nano-2025-04-14", COST), ("gpt-5", GENERAL), ("gpt-5.1", GENERAL),
    ("gpt-5-chat-latest", GENERAL), ("gpt-5-mini", COST), ("gpt-5-nano-2025-08-07", COST),
    ("o1", GENERAL), ("o1-mini", GENERAL), ("o3", GENERAL), ("o3-mini-2025-01-31", GENERAL),
    ("o4-mini", GENERAL), ("gpt-4o-2024-08-06", GENERAL), ("gpt-4o-mini-2024-07-18", COST),
    ("chatgpt-4o-latest", GENERAL), ("gpt-4-turbo-2024-04-09", GENERAL),
    ("gpt-3.5-turbo-0125", COST), ("gpt-5-codex", CODING), ("text-embedding-3-large", "bge-m3"),
])
def test_families_land_in_the_guides_classes(models: ModelMap, model: str, target: str) -> None:
    resolution = models.resolve(model, PLAIN)
    assert resolution is not None and resolution.upstream == target


def test_dated_general_snapshots_keep_vision_and_long_context(models: ModelMap) -> None:
    image = RequestFacts(CHAT, has_image=True)
    long = RequestFacts(CHAT, prompt_tokens=50_000)
    for model in ("gpt-4o-2024-11-20", "gpt-4.1", "o3", "gpt-5.1"):
        assert models.resolve(model, image).upstream == "Qwen2.5-VL-72B-Instruct"  # type: ignore[union-attr]
        assert models.resolve(model, long).upstream == "Meta-Llama-3_3-70B-Instruct"  # type: ignore[union-attr]


def test_coverage_follows_exact_then_globs_in_order() -> None:
    rules = load_rules(SHIPPED).models
    covered = coverage(rules, ["gpt-4o", "gpt-4o-mini-2024-07-18", "o3-mini", "nope"])
    assert covered["gpt-4o"] == ["gpt-4o"]
    assert covered["gpt-4o-mini-*"] == ["gpt-4o-mini-2024-07-18"]
    assert covered["gpt-4o-*"] == []
    assert covered["o3*"] == ["o3-mini"]


def test_check_prints_glob_coverage_and_vector_size_warnings(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "--rules-only", "--rules", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "  o4-mini*                   o4-mini, o4-mini-2025-04-16" in out
    assert "known OpenAI ids with no mapping: none" in out
    assert ("warning: text-embedding-3-small (1536 dimensions) -> bge-m3 (1024 dimensions): "
            "vectors change size; re-embed stored vectors") in out
