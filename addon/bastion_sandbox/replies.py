"""Building replies: compact JSON, OpenAI error envelopes, ids."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bastion_sandbox.errors import BastionError

JSON_CONTENT_TYPE = "application/json"


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.Response(
        body=dumps(payload), status=status, content_type=JSON_CONTENT_TYPE, headers=headers
    )
    response.headers["x-request-id"] = new_id("req_")
    return response


def error_response(err: BastionError, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(body=dumps(err.as_json()), status=err.status,
                            content_type=JSON_CONTENT_TYPE, headers=headers)
    response.headers["x-request-id"] = new_id("req_")
    return response
