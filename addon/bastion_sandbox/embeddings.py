"""`POST /v1/embeddings`: deterministic unit vectors, as floats or base64 float32.

Usage is deterministic: per input, its characters // 4 (at least 1), summed.

Vectors are derived from the input text's SHAKE-256 digest and rounded to float32, so
the `float` and `base64` (little-endian float32, as OpenAI sends) forms decode to
exactly the same numbers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from functools import lru_cache
from typing import Any

from aiohttp import web

from bastion_sandbox.content import estimate_tokens
from bastion_sandbox.errors import invalid_request
from bastion_sandbox.models import ModelKind, require_model
from bastion_sandbox.replies import json_response
from bastion_sandbox.state import json_body
from bastion_sandbox.strict import check_text_embedding_input

PATH = "/v1/embeddings"
MAX_INPUTS = 2048


@lru_cache(maxsize=4096)
def embedding_vector(text: str, dimensions: int) -> array[float]:
    """The sandbox's unit vector for `text` (float32 values)."""
    raw = array("h", hashlib.shake_256(text.encode()).digest(2 * dimensions))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return array("f", [v / norm for v in raw])


def _float32_le(vector: array[float]) -> bytes:
    if sys.byteorder == "little":
        return vector.tobytes()
    swapped = array("f", vector)
    swapped.byteswap()
    return swapped.tobytes()


def _inputs(value: object) -> list[str]:
    """The inputs as texts (token ids are refused: Bastion's tokenizers are not OpenAI's)."""
    check_text_embedding_input(value)
    if isinstance(value, str):
        items: list[str] = [value]
    elif isinstance(value, list) and value:
        items = []
        for item in value:
            if isinstance(item, str):
                items.append(item)
            else:
                raise invalid_request("'$.input' is invalid.", "invalid_value", "input")
    else:
        raise invalid_request("'$.input' is invalid.", "invalid_value", "input")
    if len(items) > MAX_INPUTS or any(not item for item in items):
        raise invalid_request("'$.input' is invalid.", "invalid_value", "input")
    return items


async def embeddings(request: web.Request) -> web.Response:
    body = await json_body(request)
    model = require_model(body.get("model"), ModelKind.EMBEDDINGS, PATH)
    dimensions = model.dimensions or 1024
    requested = body.get("dimensions")
    if requested is not None and requested != dimensions:
        raise invalid_request(
            f"The model `{model.id}` only produces {dimensions}-dimensional embeddings.",
            "dimensions_not_supported",
            "dimensions",
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid_request(
            "encoding_format must be 'float' or 'base64'.", "invalid_value", "encoding_format"
        )
    texts = _inputs(body.get("input"))
    data: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        vector = embedding_vector(text, dimensions)
        value: object = (
            base64.b64encode(_float32_le(vector)).decode()
            if encoding == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(estimate_tokens(len(text)) for text in texts)
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": model.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
