"""`limits:` in rules.yaml: what one client may cost the proxy.

Defaults protect a 512 MiB sidecar: at most `max_client_connections` connections
(about 50 KiB each when idle with TLS), JSON bodies buffered up to
`max_json_body_bytes` each and `max_buffered_body_bytes_total` together (past it: 503
with `retry-after`), slow or idle clients closed after the timeouts (a request body that
stops arriving counts as idle from its last byte).

Why 128 MiB in all: the proxy starts at about 110 MiB; a buffered body is held once
more while it is parsed and re-encoded, so the budget can cost about twice itself at
the worst moment (~370 MiB), leaving room for the connections and the Python heap. It
holds 8 bodies at the 16 MiB limit, or thousands of ordinary chat requests, at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion_edge.config.reader import Path_, Reader

MiB = 1024 * 1024
BUFFERED_TOTAL = 128 * MiB  # max_buffered_body_bytes_total's default (see above)


@dataclass(frozen=True, slots=True)
class LimitsRules:
    max_json_body_bytes: int = 16 * MiB  # over it: 413 request_too_large
    header_timeout_seconds: float = 30.0  # request headers not complete by then: closed
    idle_timeout_seconds: float = 120.0  # no request on a kept-alive connection: closed
    max_client_connections: int = 2000  # beyond: refused at accept, counted
    max_header_bytes: int = 64 * 1024  # all request header lines together: else 431
    max_header_count: int = 200  # request header fields: else 431
    max_buffered_body_bytes_total: int = BUFFERED_TOTAL  # all buffered bodies: else 503


FIELDS = ("max_json_body_bytes", "header_timeout_seconds", "idle_timeout_seconds",
          "max_client_connections", "max_header_bytes", "max_header_count",
          "max_buffered_body_bytes_total")


def read_limits(reader: Reader, value: object, path: Path_) -> LimitsRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, FIELDS)
    found: dict[str, int | float] = {}
    for name in FIELDS:
        if name not in section:
            continue
        if name.endswith("_seconds"):
            found[name] = reader.number(section[name], (*path, name))
        else:
            found[name] = reader.positive_integer(section[name], (*path, name))
    total = "max_buffered_body_bytes_total"
    if total not in found and "max_json_body_bytes" in found:  # one body always fits
        found[total] = max(int(found["max_json_body_bytes"]), BUFFERED_TOTAL)
    limits = LimitsRules(**found)  # type: ignore[arg-type]
    if limits.max_buffered_body_bytes_total < limits.max_json_body_bytes:
        raise reader.fail((*path, total),
                          f"must be at least max_json_body_bytes "
                          f"({limits.max_json_body_bytes}): one body must fit")
    return limits
