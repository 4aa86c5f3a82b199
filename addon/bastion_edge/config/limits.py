"""`limits:` in rules.yaml: what one client may cost the proxy.

Defaults protect a 512 MiB sidecar: at most `max_client_connections` connections
(about 50 KiB each when idle with TLS), JSON bodies buffered up to
`max_json_body_bytes` each, slow or idle clients closed after the timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion_edge.config.reader import Path_, Reader

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LimitsRules:
    max_json_body_bytes: int = 16 * MiB  # over it: 413 request_too_large
    header_timeout_seconds: float = 30.0  # request headers not complete by then: closed
    idle_timeout_seconds: float = 120.0  # no request on a kept-alive connection: closed
    max_client_connections: int = 2000  # beyond: refused at accept, counted
    max_header_bytes: int = 64 * 1024  # all request header lines together: else 431
    max_header_count: int = 200  # request header fields: else 431


FIELDS = ("max_json_body_bytes", "header_timeout_seconds", "idle_timeout_seconds",
          "max_client_connections", "max_header_bytes", "max_header_count")


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
    return LimitsRules(**found)  # type: ignore[arg-type]
