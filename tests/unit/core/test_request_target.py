"""An absolute-form request line inside a tunnel: the tunnel's own authority or refused."""

from __future__ import annotations

import pytest

from bastion_edge.core.request_target import (
    foreign_authority,
    foreign_authority_refused,
    split_authority,
)


@pytest.mark.parametrize(("authority", "scheme", "expected"), [
    ("api.openai.com", "https", ("api.openai.com", 443)),
    ("API.OpenAI.com.:443", "https", ("api.openai.com", 443)),
    ("example.com", "http", ("example.com", 80)),
    ("[::1]:8443", "https", ("::1", 8443)),
    ("[::1]", "https", ("::1", 443)),
    ("user@api.openai.com", "https", None),  # userinfo is not an authority here
    ("api.openai.com:99999", "https", None),
    ("api.openai.com:x", "https", None),
    ("[::1", "https", None),
    ("", "https", None),
])
def test_split_authority(authority: str, scheme: str, expected: tuple[str, int] | None) -> None:
    assert split_authority(authority, scheme) == expected


def test_only_the_tunnels_own_host_and_port_pass() -> None:
    assert not foreign_authority("api.openai.com", "https", "api.openai.com", 443)
    assert not foreign_authority("api.openai.com:443", "https", "API.openai.com.", 443)
    assert foreign_authority("evil.example", "https", "api.openai.com", 443)
    assert foreign_authority("api.openai.com:8443", "https", "api.openai.com", 443)
    assert foreign_authority("api.openai.com@evil.example", "https", "api.openai.com", 443)
    assert not foreign_authority("[::1]:8443", "https", "::1", 8443)


def test_the_refusal_is_an_openai_error() -> None:
    error = foreign_authority_refused("evil.example" + "x" * 500)
    assert (error.status, error.code, error.type) == (400, "foreign_authority",
                                                       "invalid_request_error")
    assert len(error.message) < 400
