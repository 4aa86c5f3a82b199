"""Bearer-key checks, as Bastion makes them (and one it makes for the proxy's sake).

A key starting with `sk-` looks like an OpenAI key: the proxy must never forward one,
so it is refused with 401 `openai_key_received`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bastion_sandbox.config import OPENAI_KEY_PREFIX
from bastion_sandbox.errors import AUTHENTICATION, BastionError
from bastion_sandbox.models import PERSONA
from bastion_sandbox.state import is_sandbox_path


def mask_key(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


def check_authorization(
    header: str | None, api_keys: frozenset[str], persona: str = "bastion"
) -> str:
    """The bearer key of an Authorization header if Bastion (or OpenAI) would accept it."""
    scheme, _, key = (header or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise BastionError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_api_key",
            AUTHENTICATION,
        )
    if persona == "openai":
        if not key.startswith(OPENAI_KEY_PREFIX):
            raise BastionError(401, f"Incorrect API key provided: {mask_key(key)}. The OpenAI "
                           "stand-in takes OpenAI keys (sk-...).", "invalid_api_key",
                           AUTHENTICATION)
        return key
    if key.startswith(OPENAI_KEY_PREFIX):
        raise BastionError(
            401,
            f"Incorrect API key provided: {mask_key(key)}. This is an OpenAI key; "
            "Bastion needs a Bastion API key.",
            "openai_key_received",
            AUTHENTICATION,
        )
    if api_keys and key not in api_keys:
        raise BastionError(
            401, f"Incorrect API key provided: {mask_key(key)}.", "invalid_api_key", AUTHENTICATION
        )
    return key


def auth_middleware(api_keys: frozenset[str], persona: str = "bastion") -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        PERSONA.set(persona)
        if not is_sandbox_path(request.path):
            check_authorization(request.headers.get("Authorization"), api_keys, persona)
        return await handler(request)

    return authenticate
