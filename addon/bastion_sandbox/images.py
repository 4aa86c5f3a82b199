"""`POST /v1/images/generations`: a real, tiny, single-colour PNG per prompt.

Bastion requires `model` here (OpenAI defaults it). `response_format` `b64_json`
embeds the PNG; `url` (the default) points at `GET /sandbox/images/<rrggbb>.png`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
import zlib

from aiohttp import web

from bastion_sandbox.errors import invalid_request
from bastion_sandbox.models import ModelKind, require_model
from bastion_sandbox.replies import json_response
from bastion_sandbox.state import json_body

PATH = "/v1/images/generations"
IMAGE_FILES_PATH = "/sandbox/images"
PNG_SIDE = 8
MAX_IMAGES = 4
_SIZE = re.compile(r"^(auto|\d{2,4}x\d{2,4})$")
_COLOUR = re.compile(r"^[0-9a-f]{6}$")


def tiny_png(rgb: bytes, side: int = PNG_SIDE) -> bytes:
    """A valid `side`x`side` RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + rgb * side for _ in range(side))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def colour_for(prompt: str, index: int) -> bytes:
    return hashlib.sha256(f"{index}\0{prompt}".encode()).digest()[:3]


async def image_generations(request: web.Request) -> web.Response:
    body = await json_body(request)
    require_model(body.get("model"), ModelKind.IMAGES, PATH)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid_request("'prompt' is required.", "missing_required_parameter", "prompt")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise invalid_request(f"'n' must be an integer 1..{MAX_IMAGES}.", "invalid_value", "n")
    size = body.get("size", "1024x1024")
    if not isinstance(size, str) or not _SIZE.match(size):
        raise invalid_request("'size' must look like 1024x1024.", "invalid_value", "size")
    response_format = body.get("response_format", "url")
    if response_format not in ("url", "b64_json"):
        raise invalid_request(
            "response_format must be 'url' or 'b64_json'.", "invalid_value", "response_format"
        )
    origin = f"{request.scheme}://{request.host}"
    data: list[dict[str, str]] = []
    for index in range(n):
        rgb = colour_for(prompt, index)
        if response_format == "b64_json":
            data.append({"b64_json": base64.b64encode(tiny_png(rgb)).decode()})
        else:
            data.append({"url": f"{origin}{IMAGE_FILES_PATH}/{rgb.hex()}.png"})
    return json_response({"created": int(time.time()), "data": data})


async def image_file(request: web.Request) -> web.Response:
    colour = request.match_info["colour"]
    if not _COLOUR.match(colour):
        raise web.HTTPNotFound()
    return web.Response(body=tiny_png(bytes.fromhex(colour)), content_type="image/png")
