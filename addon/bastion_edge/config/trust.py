"""Reading the trust boundary of rules.yaml: the apps that may use the proxy (`clients`),
the key file (`keys.default_file`) and the egress exceptions (`egress.allow`).

Secrets and keys never appear in rules.yaml: apps are known by the sha256 of their proxy
secret, keys by the file or variable holding them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bastion_edge.config.quota_rules import OUTAGE_MODES, quota_from_rules
from bastion_edge.config.reader import Path_, Reader
from bastion_edge.config.schema import AppRules, ClientsRules, EgressAllow, EgressRules

APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Fields someone might use to paste a key or secret into rules.yaml: refused by name.
LITERAL_KEY_FIELDS = ("key", "api_key", "bastion_key", "default", "default_key", "value",
                      "secret", "password", "token")


def reject_literal_keys(reader: Reader, section: Mapping[str, Any], path: Path_) -> None:
    for name in LITERAL_KEY_FIELDS:
        if name in section:
            raise reader.fail((*path, name),
                              "keys and secrets never go in rules.yaml; name an environment "
                              "variable (*_env), a file (*_file) or, for an app's proxy "
                              "secret, its secret_sha256 (`bastion-edge app add`)")


def read_key_file(reader: Reader, value: object, path: Path_) -> str | None:
    section = reader.mapping(value, path)
    if "default_file" not in section:
        return None
    if "default_env" in section:
        raise reader.fail((*path, "default_file"), "give default_env or default_file, not both")
    return reader.string(section["default_file"], (*path, "default_file"), "a file path")


def read_clients(reader: Reader, value: object, path: Path_) -> ClientsRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path,
                     ("apps", "transparent_app", "default_quota", "quota_store_outage"))
    items = section.get("apps") or []
    if not isinstance(items, list):
        raise reader.fail((*path, "apps"), "expected a list of {name, secret_sha256}")
    apps: list[AppRules] = []
    for i, item in enumerate(items):
        app = _read_app(reader, item, (*path, "apps", i))
        if any(a.name == app.name for a in apps):
            raise reader.fail((*path, "apps", i, "name"), f"app {app.name!r} declared twice")
        apps.append(app)
    clients = ClientsRules(tuple(apps))
    if section.get("default_quota") is not None:
        clients = replace(clients, default_quota=quota_from_rules(
            reader, section["default_quota"], (*path, "default_quota")))
    if section.get("quota_store_outage") is not None:
        clients = replace(clients, quota_store_outage=reader.choice(
            section["quota_store_outage"], (*path, "quota_store_outage"), OUTAGE_MODES))
    if section.get("transparent_app") is not None:
        name = reader.string(section["transparent_app"], (*path, "transparent_app"))
        if clients.app(name) is None:
            raise reader.fail((*path, "transparent_app"),
                              f"{name!r} is not one of the apps declared in clients.apps")
        clients = replace(clients, transparent_app=name)
    return clients


def _read_app(reader: Reader, value: object, path: Path_) -> AppRules:
    entry = reader.mapping(value, path)
    reject_literal_keys(reader, entry, path)
    reader.only_keys(entry, path,
                     ("name", "secret_sha256", "bastion_key_env", "bastion_key_file", "quota"))
    name = reader.string(entry.get("name"), (*path, "name"), "an app name")
    if not APP_NAME.fullmatch(name):
        raise reader.fail((*path, "name"),
                          f"expected letters, digits, '.', '_' or '-' (it is the user part of "
                          f"the proxy URL), got {name!r}")
    digest = entry.get("secret_sha256")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest.lower()):
        raise reader.fail((*path, "secret_sha256"),
                          "expected the 64 hex digits of sha256(secret) "
                          "(`bastion-edge app add NAME` prints it)")
    app = AppRules(name, digest.lower())
    if "bastion_key_env" in entry and "bastion_key_file" in entry:
        raise reader.fail((*path, "bastion_key_file"),
                          "give bastion_key_env or bastion_key_file, not both")
    if entry.get("bastion_key_env") is not None:
        app = replace(app, bastion_key_env=reader.env_name(
            entry["bastion_key_env"], (*path, "bastion_key_env")))
    if entry.get("bastion_key_file") is not None:
        app = replace(app, bastion_key_file=reader.string(
            entry["bastion_key_file"], (*path, "bastion_key_file"), "a file path"))
    if "quota" in entry:  # null or {}: no limits at all, not the default
        app = replace(app, quota=quota_from_rules(reader, entry["quota"], (*path, "quota")))
    return app


def read_egress(reader: Reader, value: object, path: Path_) -> EgressRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, ("allow",))
    if section.get("allow") is None:
        return EgressRules()
    texts = reader.strings(section["allow"], (*path, "allow"))
    allow = []
    for i, text in enumerate(texts):
        try:
            allow.append(parse_egress_allow(text))
        except ValueError as e:
            where = (*path, "allow", i) if isinstance(section["allow"], list) else (*path, "allow")
            raise reader.fail(where, str(e)) from e
    return EgressRules(tuple(allow))


def parse_egress_allow(text: str) -> EgressAllow:
    """`host`, `host:port`, `[v6]:port`, an IP or a CIDR (a network has no port)."""
    shape = "expected host, host:port or a CIDR"
    if "/" in text:
        try:
            return EgressAllow(text, network=ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise ValueError(f"{shape}: {e}") from e
    with_port = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", text)
    if with_port:
        host, port_text = with_port.group(1), with_port.group(2)
    else:
        try:
            ipaddress.ip_address(text)  # a bare address, v6 included
            host, port_text = text, None
        except ValueError:
            host, _, port_text = text.partition(":")
            port_text = port_text or None
    port = int(port_text) if port_text is not None and port_text.isdigit() else None
    if port_text is not None and (port is None or not 0 < port < 65536):
        raise ValueError(f"{shape}: bad port in {text!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ValueError(f"{shape}, got {text!r}") from None
        return EgressAllow(text, host=host.lower().rstrip("."), port=port)
    return EgressAllow(text, network=ipaddress.ip_network(address), port=port)
