"""Token-id embeddings input, decoded back to text. Pure (given the tokenizer).

OpenAI's embeddings endpoint also takes `input` as token ids (a list of ints, or a
list of such lists); langchain-openai's `OpenAIEmbeddings` sends that by default. The
ids are OpenAI's tokenizer's, meaningless to a Bastion model with its own, so the proxy
decodes them with the tokenizer of the model the app named and Bastion embeds the text.
"""

from __future__ import annotations

from collections.abc import Callable

import tiktoken

from bastion_edge.core.openai_tokenizer import encoding, encoding_name_for
from bastion_edge.errors import bad_request

Tokens = list[int]


def token_lists(value: object) -> list[Tokens] | None:
    """The token-id lists in an `input` (one list for a flat list of ints); None when
    the input is not token ids (text, a list of texts, or malformed)."""
    if not isinstance(value, list) or not value:
        return None
    if all(_is_id(v) for v in value):
        return [value]
    if all(isinstance(v, list) and v and all(_is_id(i) for i in v) for v in value):
        return value
    return None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decoded_input(value: object, model: str,
                  load: Callable[[str], tiktoken.Encoding] = encoding) -> str | list[str] | None:
    """`input` as text(s) if it is token ids of a model whose tokenizer is known; else None.

    A flat list of ints is one text; a list of lists, one text each. Ids the tokenizer
    does not have (special tokens included) are a 400 naming the first of them.
    """
    lists = token_lists(value)
    name = encoding_name_for(model)
    if lists is None or name is None:
        return None
    tokenizer = load(name)
    texts = [_decode(tokenizer, tokens, model) for tokens in lists]
    flat = isinstance(value, list) and all(_is_id(v) for v in value)
    return texts[0] if flat else texts


def _decode(tokenizer: tiktoken.Encoding, tokens: Tokens, model: str) -> str:
    special = {tokenizer.encode_single_token(name) for name in tokenizer.special_tokens_set}
    bad = next((t for t in tokens if t < 0 or t in special), None)
    if bad is None:
        try:
            return tokenizer.decode(tokens)
        except (KeyError, OverflowError, ValueError):
            bad = next((t for t in tokens if _undecodable(tokenizer, t)), tokens[0])
    raise bad_request(f"Invalid 'input': token id {bad} is not a {tokenizer.name} token "
                      f"(the tokenizer of {model}).", "invalid_value", "input")


def _undecodable(tokenizer: tiktoken.Encoding, token: int) -> bool:
    try:
        tokenizer.decode_single_token_bytes(token)
    except (KeyError, OverflowError, ValueError):
        return True
    return False
