import random
import re

import pytest

from bastion_edge.tts.chunking import (
    CHUNK_BUDGET_FRACTION,
    chunk_text,
    estimated_seconds,
    max_chunk_chars,
)
from bastion_edge.tts.riva_contract import MAX_AUDIO_SECONDS_PER_REQUEST

WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seventeen",
    "curious", "engineers", "measure", "latency", "budgets", "carefully",
)


def prose(length: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    out = ""
    while len(out) < length:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
        if rng.random() < 0.3:
            sentence += ", " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
        out += sentence.capitalize() + rng.choice([". ", "! ", "? ", ".\n\n"])
    return out[:length]


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("rate", [None, 25, 50, 200, 250])
def test_4096_chars_split_under_the_cap_without_losing_text(rate: int | None) -> None:
    text = prose(4096)
    chunks = chunk_text(text, max_chunk_chars(rate))
    cap = MAX_AUDIO_SECONDS_PER_REQUEST * CHUNK_BUDGET_FRACTION
    assert len(chunks) > 1
    assert all(estimated_seconds(c, rate) <= cap for c in chunks)
    assert squash(" ".join(chunks)) == squash(text)


def test_no_chunk_splits_a_word() -> None:
    text = prose(4096, seed=7)
    words = set(re.findall(r"\w+", text))
    for chunk in chunk_text(text, max_chunk_chars(50)):
        assert set(re.findall(r"\w+", chunk)) <= words


def test_prefers_sentence_boundaries() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert chunk_text(text, 30) == ["One two three. Four five six.", "Seven eight nine."]


def test_long_sentence_cut_at_clauses_then_words() -> None:
    text = "alpha beta gamma, delta epsilon zeta, eta theta iota kappa lambda mu nu xi omicron"
    chunks = chunk_text(text, 20)
    assert chunks[:2] == ["alpha beta gamma,", "delta epsilon zeta,"]
    assert all(len(c) <= 20 for c in chunks)
    assert squash(" ".join(chunks)) == text


def test_short_text_is_one_chunk_and_stripped() -> None:
    assert chunk_text("  Hello world.\n", 240) == ["Hello world."]


def test_overlong_word_is_cut_hard() -> None:
    url = "https://example.com/" + "a" * 100
    chunks = chunk_text(url, 40)
    assert "".join(chunks) == url and all(len(c) <= 40 for c in chunks)


def test_cjk_sentences_split_without_spaces() -> None:
    text = "今日は良い天気です。" * 30
    chunks = chunk_text(text, 50)
    assert all(len(c) <= 50 and c.endswith("。") for c in chunks)
    assert "".join(chunks) == text
