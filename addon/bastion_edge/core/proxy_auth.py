"""Who is asking: HTTP Basic proxy credentials checked against `clients.apps`.

Apps carry `name:secret` in their proxy URL; every SDK and curl turn that into
`Proxy-Authorization: Basic base64(name:secret)`. The rules hold only sha256(secret),
compared in constant time. Pure: no mitmproxy here (see proxy_gate.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from bastion_edge.config.schema import AppRules
from bastion_edge.errors import AUTHENTICATION, ApiError

REALM = "bastion-edge"
PROXY_AUTHENTICATE = ("Proxy-Authenticate", f'Basic realm="{REALM}"')


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "missing" | "malformed" | "invalid": safe to log, never the secret


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A random secret that needs no escaping in a URL's userinfo."""
    return secrets.token_urlsafe(32)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, secret) from `Basic base64(user:secret)`, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, secret = decoded.partition(":")
    if not colon or not user:
        return None
    return user, secret


def authenticate(apps: Sequence[AppRules], header: str | None) -> str | Refusal:
    """The app named by valid credentials in `header`, or why not."""
    if not header:
        return Refusal("missing")
    credentials = parse_basic(header)
    if credentials is None:
        return Refusal("malformed")
    user, secret = credentials
    digest = secret_sha256(secret).encode()
    found: str | None = None
    for app in apps:  # every app is compared, so timing says nothing about which matched
        same_secret = hmac.compare_digest(digest, app.secret_sha256.encode())
        same_name = hmac.compare_digest(user.encode(), app.name.encode())
        if same_secret and same_name:
            found = app.name
    return found if found is not None else Refusal("invalid")


def proxy_auth_required(refusal: Refusal) -> ApiError:
    """The 407 envelope; send it with PROXY_AUTHENTICATE."""
    detail = {
        "missing": "no proxy credentials were sent",
        "malformed": "the Proxy-Authorization header is not HTTP Basic",
        "invalid": "unknown app or wrong secret",
    }.get(refusal.reason, refusal.reason)
    return ApiError(
        407,
        f"bastion-edge requires proxy authentication: {detail}. Put the app's name and "
        "secret in its proxy URL (HTTPS_PROXY=http://<app>:<secret>@host:port; "
        "`bastion-edge app add <app>` creates one). Nothing was sent upstream.",
        "proxy_authentication_required", AUTHENTICATION)


def proxy_url(name: str, secret: str, host: str, port: int) -> str:
    return f"http://{name}:{secret}@{host}:{port}"
