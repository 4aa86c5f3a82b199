"""The one-pass header and body edits behave like mitmproxy's own setters."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from bastion_edge.proxy.flow_edit import (
    lower_headers,
    point_at,
    replace_body,
    request_host,
    set_headers,
    worth_streaming,
)

FIELDS = [
    (b"Host", b"api.openai.com"),
    (b"Authorization", b"Bearer sk-app"),
    (b"Accept", b"application/json"),
    (b"OpenAI-Organization", b"org-1"),
    (b"X-Dup", b"one"),
    (b"x-dup", b"two"),
]


def headers() -> http.Headers:
    return http.Headers(list(FIELDS))


def test_set_headers_matches_mitmproxy_item_assignment() -> None:
    ours, theirs = headers(), headers()
    set_headers(ours, {"authorization": "Bearer bk", "x-dup": "three", "x-new": "v"},
                drop=["openai-organization"])
    theirs["authorization"] = "Bearer bk"
    theirs["x-dup"] = "three"
    theirs["x-new"] = "v"
    del theirs["openai-organization"]
    assert ours.fields == theirs.fields


def test_set_headers_keeps_the_place_and_spelling_of_a_replaced_header() -> None:
    edited = headers()
    set_headers(edited, {"AUTHORIZATION": "Bearer bk"})
    assert edited.fields[1] == (b"Authorization", b"Bearer bk")
    assert len(edited.fields) == len(FIELDS)


def test_set_headers_encodes_values_as_mitmproxy_does() -> None:
    edited = headers()
    set_headers(edited, {"x-model": "modèle"})
    theirs = headers()
    theirs["x-model"] = "modèle"
    assert edited.fields == theirs.fields


def test_drop_of_an_absent_header_changes_nothing() -> None:
    edited = headers()
    set_headers(edited, {}, drop=["openai-project"])
    assert edited.fields == tuple(FIELDS)


def test_lower_headers_lower_cases_names_and_keeps_the_last_duplicate() -> None:
    request = tutils.treq(headers=http.Headers(list(FIELDS)))
    found = lower_headers(request)
    assert found["authorization"] == "Bearer sk-app"
    assert found["x-dup"] == "two"


@pytest.mark.parametrize(
    ("host_header", "expected"),
    [("api.openai.com", "api.openai.com"), ("api.openai.com:443", "api.openai.com"),
     ("[::1]:8443", "::1"), ("[2001:db8::1]", "2001:db8::1"), ("a:b:c", "a:b:c")],
)
def test_request_host_agrees_with_pretty_host(host_header: str, expected: str) -> None:
    request = tutils.treq(headers=http.Headers(host=host_header))
    assert request_host(request, lower_headers(request)) == expected
    if ":" not in expected or host_header.startswith("["):
        assert request.pretty_host == expected


def test_request_host_without_a_host_header_is_the_destination() -> None:
    request = tutils.treq(headers=http.Headers())
    request.host = "10.0.0.7"
    assert request_host(request, {}) == "10.0.0.7"


def test_point_at_sets_destination_host_header_and_edits_in_one_go() -> None:
    request = tutils.treq(headers=http.Headers(list(FIELDS)))
    point_at(request, "https", "127.0.0.1", 9443, "127.0.0.1:9443",
             put={"authorization": "Bearer bk"}, drop=["openai-organization"])
    assert (request.scheme, request.host, request.port) == ("https", "127.0.0.1", 9443)
    assert request.headers["host"] == "127.0.0.1:9443"
    assert request.headers["authorization"] == "Bearer bk"
    assert "openai-organization" not in request.headers
    assert request.url == "https://127.0.0.1:9443" + request.path


def test_point_at_on_http2_sets_the_authority() -> None:
    request = tutils.treq(headers=http.Headers())
    request.http_version = "HTTP/2.0"
    point_at(request, "https", "127.0.0.1", 9443, "127.0.0.1:9443")
    assert request.authority == "127.0.0.1:9443"
    assert "host" not in request.headers  # h2 only overwrites an existing Host


def test_replace_body_sets_content_length_like_the_content_setter() -> None:
    ours = tutils.treq(headers=http.Headers(content_length="3"), content=b"abc")
    theirs = tutils.treq(headers=http.Headers(content_length="3"), content=b"abc")
    replace_body(ours, b"longer body", lower_headers(ours))
    theirs.content = b"longer body"
    assert ours.raw_content == theirs.raw_content
    assert ours.headers.fields == theirs.headers.fields


def test_replace_body_leaves_chunked_bodies_without_content_length() -> None:
    request = tutils.treq(headers=http.Headers(transfer_encoding="chunked"), content=b"abc")
    replace_body(request, b"xyz!", lower_headers(request))
    assert request.raw_content == b"xyz!"
    assert "content-length" not in request.headers


def test_replace_body_encodes_again_when_the_body_was_compressed() -> None:
    request = tutils.treq(headers=http.Headers(content_encoding="gzip"), content=b"")
    request.content = b"original"
    replace_body(request, b"rewritten", lower_headers(request))
    assert request.raw_content != b"rewritten"  # gzip-encoded on the wire
    assert request.content == b"rewritten"
    assert request.headers["content-length"] == str(len(request.raw_content or b""))


@pytest.mark.parametrize(
    ("length", "expected"), [("10", False), (str(2 * 1024 * 1024), True), (None, True)])
def test_worth_streaming_large_or_unknown_lengths(length: str | None, expected: bool) -> None:
    assert worth_streaming({"content-length": length} if length else {}) is expected


def test_a_value_read_and_written_back_keeps_its_bytes() -> None:
    raw = b"Bearer sk-\xe9\xff-odd"
    request = tutils.treq(headers=http.Headers([(b"Authorization", raw)]))
    value = lower_headers(request)["authorization"]
    set_headers(request.headers, {"authorization": value})
    assert request.headers.fields == ((b"Authorization", raw),)


def test_comment_column_added_once() -> None:
    from bastion_edge.proxy.flow_edit import with_comment_column

    assert with_comment_column(["path", "status"]) == ["path", "status", "comment"]
    assert with_comment_column(["comment", "path"]) is None
