"""Input generators shared by the fuzz properties: JSON values that stress the parsers
(deep nesting, lone surrogates, odd numbers), model ids, bytes near multipart delimiters."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

MODEL_IDS = st.sampled_from([
    "gpt-4o", "gpt-4o-mini", "whisper-1", "text-embedding-3-small", "dall-e-3",
    "gpt-oss-120b", "unknown-model", "", "gpt-4o\r\nSet-Cookie: x=1", "m\x00odel", "modèle",
])
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(TEXT | st.sampled_from(["model", "input", "messages", "stream",
                                              "store", "type", "id", "role", "content"]),
                      children, max_size=4),
    max_leaves=30,
)


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    """Mostly JSON objects with API-ish fields, sometimes deep, sometimes not JSON."""
    kind = draw(st.sampled_from(["object", "deep", "surrogate", "bytes", "value"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=20_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return ('{"model":"gpt-4o","x":' + opener * depth + "1" + closer * depth + "}").encode()
    if kind == "surrogate":
        return b'{"model":"gpt-4o","input":"\\ud800","messages":[]}'
    if kind == "value":
        return json.dumps(draw(JSON_VALUES)).encode()
    body: dict[str, Any] = draw(st.dictionaries(st.sampled_from(
        ["messages", "input", "stream", "store", "previous_response_id", "tools",
         "response_format", "dimensions", "n", "instructions"]), JSON_VALUES, max_size=5))
    if draw(st.booleans()):
        body["model"] = draw(MODEL_IDS | JSON_VALUES)
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
