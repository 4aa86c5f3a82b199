"""Proxy credentials: Basic parsing, constant-time checks against declared apps, the 407."""

from __future__ import annotations

import base64
import json

from bastion_edge.config.rules import AppRules
from bastion_edge.core.proxy_auth import (
    PROXY_AUTHENTICATE,
    Refusal,
    authenticate,
    new_secret,
    parse_basic,
    proxy_auth_required,
    proxy_url,
    secret_sha256,
)

SECRET = "c0rrect-horse"
APPS = (AppRules("reports", secret_sha256("other")), AppRules("billing", secret_sha256(SECRET)))


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_parse_basic() -> None:
    assert parse_basic(basic("billing", "a:b")) == ("billing", "a:b")
    assert parse_basic("basic  " + base64.b64encode(b"u:").decode()) == ("u", "")
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", "Basic " +
                base64.b64encode(b"no-colon").decode(), "Basic " +
                base64.b64encode(b":secret").decode()):
        assert parse_basic(bad) is None


def test_authenticate_names_the_app_or_says_why_not() -> None:
    assert authenticate(APPS, basic("billing", SECRET)) == "billing"
    assert authenticate(APPS, None) == Refusal("missing")
    assert authenticate(APPS, "Bearer sk-x") == Refusal("malformed")
    assert authenticate(APPS, basic("billing", "wrong")) == Refusal("invalid")
    assert authenticate(APPS, basic("reports", SECRET)) == Refusal("invalid")  # other's secret
    assert authenticate(APPS, basic("nobody", SECRET)) == Refusal("invalid")
    assert authenticate((), basic("billing", SECRET)) == Refusal("invalid")


def test_407_is_an_openai_envelope_that_never_echoes_the_secret() -> None:
    error = proxy_auth_required(Refusal("invalid"))
    assert error.status == 407
    body = json.loads(error.body())
    assert body["error"]["code"] == "proxy_authentication_required"
    assert "wrong secret" in body["error"]["message"]
    assert PROXY_AUTHENTICATE == ("Proxy-Authenticate", 'Basic realm="bastion-edge"')


def test_new_secret_is_url_safe_and_fresh() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and len(a) >= 40
    assert proxy_url("billing", a, "127.0.0.1", 8080) == f"http://billing:{a}@127.0.0.1:8080"
    assert all(c.isalnum() or c in "-_" for c in a)
