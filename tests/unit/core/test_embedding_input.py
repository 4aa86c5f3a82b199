"""Token-id embeddings input decoded with OpenAI's tokenizer, from the packaged file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion_edge.core.embedding_input import decoded_input, token_lists
from bastion_edge.core.openai_tokenizer import cl100k_base, encoding_name_for
from bastion_edge.errors import ApiError

HELLO_WORLD = [15339, 1917]  # cl100k_base("hello world")


def test_flat_and_nested_token_ids_become_text() -> None:
    assert decoded_input(HELLO_WORLD, "text-embedding-3-small") == "hello world"
    texts = decoded_input([HELLO_WORLD, cl100k_base().encode("naïve ☃ café")],
                          "text-embedding-ada-002")
    assert texts == ["hello world", "naïve ☃ café"]


def test_text_input_and_unknown_tokenizers_are_left_alone() -> None:
    assert decoded_input("hello", "text-embedding-3-small") is None
    assert decoded_input(["a", "b"], "text-embedding-3-large") is None
    assert decoded_input(HELLO_WORLD, "bge-m3") is None  # not an OpenAI id: no tokenizer
    assert token_lists([[1], "x"]) is None and token_lists([True, 2]) is None
    assert encoding_name_for("text-embedding-3-large") == "cl100k_base"


@pytest.mark.parametrize("bad", [[-1], [100257], [100261], [10**9]])
def test_ids_outside_the_vocabulary_are_400(bad: list[int]) -> None:
    with pytest.raises(ApiError) as raised:
        decoded_input([15339, *bad], "text-embedding-3-small")
    assert (raised.value.status, raised.value.param) == (400, "input")
    assert str(bad[0]) in raised.value.message


OFFLINE_DECODE = """
import os, socket, sys
try:
    socket.create_connection(("1.1.1.1", 443), timeout=2)
    sys.exit("the network is reachable: this test must run without one")
except OSError:
    pass
from bastion_edge.core.embedding_input import decoded_input
print(decoded_input([[15339, 1917], [5686]], "text-embedding-3-small"))
print(os.listdir(os.environ["TIKTOKEN_CACHE_DIR"]))
"""


def test_tokenizer_loads_with_the_network_cut(tmp_path: Path) -> None:
    """In a fresh network namespace (no interfaces up), with an empty tiktoken cache and
    a proxy that refuses: the encoding comes from the package, nothing is downloaded."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {"PATH": "/usr/bin:/bin", "TIKTOKEN_CACHE_DIR": str(cache),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", OFFLINE_DECODE],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    if "unshare failed" in done.stderr:
        pytest.skip(f"cannot create a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['hello world', 'second']", "[]"]
