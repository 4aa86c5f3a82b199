"""Reading the model sections of rules.yaml: `models`, `keys`, their `when:` conditions,
`fallbacks`, `capabilities` and `embedding_dimensions`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace

from bastion_edge.config.endpoints import ENDPOINTS
from bastion_edge.config.reader import Path_, Reader
from bastion_edge.config.schema import (
    ALL_SUPPORTED,
    DEFAULT_DIMENSIONS,
    DEFAULT_KEY_ENV,
    MIN_KEY_HASH_PREFIX,
    Condition,
    KeyRule,
    ModelCapabilities,
    ModelRule,
    ModelTarget,
)
from bastion_edge.config.trust import read_key_file, reject_literal_keys


def read_models(reader: Reader, value: object, path: Path_) -> tuple[ModelRule, ...]:
    section = reader.mapping(value, path)
    rules = []
    for pattern, target in section.items():
        entry_path = (*path, str(pattern))
        if isinstance(target, str) and target:
            choices: tuple[ModelTarget, ...] = (ModelTarget(target),)
        elif isinstance(target, list) and target:
            choices = tuple(read_model_target(reader, item, (*entry_path, i))
                            for i, item in enumerate(target))
        else:
            raise reader.fail(entry_path,
                              "expected a string (a Bastion model id) "
                              "or a list of {when, use} choices")
        rules.append(ModelRule(str(pattern), choices))
    return tuple(rules)


def read_model_target(reader: Reader, value: object, path: Path_) -> ModelTarget:
    entry = reader.mapping(value, path)
    reader.only_keys(entry, path, ("when", "use"))
    if "use" not in entry:
        raise reader.fail(path, "expected `use: <Bastion model id>`")
    use = reader.string(entry["use"], (*path, "use"))
    when = read_condition(reader, entry["when"], (*path, "when")) if "when" in entry \
        else Condition()
    return ModelTarget(use, when)


def read_keys(reader: Reader, value: object, path: Path_) -> Mapping[str, object]:
    """`keys:` sets key_env, key_rules and key_file."""
    section = reader.mapping(value, path)
    reject_literal_keys(reader, section, path)
    reader.only_keys(section, path, ("default_env", "default_file", "select"))
    key_env = DEFAULT_KEY_ENV
    if "default_env" in section:
        key_env = reader.env_name(section["default_env"], (*path, "default_env"))
    selected: list[KeyRule] = []
    select = section.get("select") or []
    if not isinstance(select, list):
        raise reader.fail((*path, "select"), "expected a list of {when, env}")
    for i, item in enumerate(select):
        item_path = (*path, "select", i)
        entry = reader.mapping(item, item_path)
        reader.only_keys(entry, item_path, ("when", "env"))
        if "env" not in entry or "when" not in entry:
            raise reader.fail(item_path, "expected both `when` and `env`")
        when = read_condition(reader, entry["when"], (*item_path, "when"))
        selected.append(KeyRule(reader.env_name(entry["env"], (*item_path, "env")), when))
    return {"key_env": key_env, "key_rules": tuple(selected),
            "key_file": read_key_file(reader, section, path)}


def read_condition(reader: Reader, value: object, path: Path_) -> Condition:
    entry = reader.mapping(value, path)
    reader.only_keys(entry, path, (
        "endpoint", "has_image", "prompt_tokens_over", "header", "app_key_sha256", "client",
        "app",
    ))
    condition = Condition()
    if "app" in entry:
        condition = replace(condition, apps=reader.strings(entry["app"], (*path, "app")))
    if "endpoint" in entry:
        endpoints = reader.strings(entry["endpoint"], (*path, "endpoint"))
        for name in endpoints:
            if name not in ENDPOINTS:
                raise reader.fail((*path, "endpoint"),
                                  f"unknown endpoint {name!r}; expected one of "
                                  + ", ".join(ENDPOINTS))
        condition = replace(condition, endpoints=endpoints)
    if "has_image" in entry:
        condition = replace(condition, has_image=reader.boolean(
            entry["has_image"], (*path, "has_image")))
    if "prompt_tokens_over" in entry:
        tokens = entry["prompt_tokens_over"]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise reader.fail((*path, "prompt_tokens_over"), "expected a non-negative integer")
        condition = replace(condition, prompt_tokens_over=tokens)
    if "header" in entry:
        headers = reader.mapping(entry["header"], (*path, "header"))
        pairs = tuple((str(k).lower(), reader.string(v, (*path, "header", str(k))))
                      for k, v in headers.items())
        condition = replace(condition, headers=pairs)
    if "app_key_sha256" in entry:
        prefixes = reader.strings(entry["app_key_sha256"], (*path, "app_key_sha256"))
        for prefix in prefixes:
            if not re.fullmatch(rf"[0-9a-f]{{{MIN_KEY_HASH_PREFIX},64}}", prefix):
                raise reader.fail((*path, "app_key_sha256"),
                                  f"expected {MIN_KEY_HASH_PREFIX}-64 lower-case hex digits "
                                  "(see `bastion-edge key-hash`), never a raw key")
        condition = replace(condition, app_key_sha256=prefixes)
    if "client" in entry:
        networks = []
        for text in reader.strings(entry["client"], (*path, "client")):
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as e:
                raise reader.fail((*path, "client"), f"expected an IP or CIDR: {e}") from e
        condition = replace(condition, clients=tuple(networks))
    return condition


def read_fallbacks(reader: Reader, value: object,
                   path: Path_) -> Mapping[str, tuple[str, ...]]:
    section = reader.mapping(value, path)
    out: dict[str, tuple[str, ...]] = {}
    for model, alternatives in section.items():
        entry_path = (*path, str(model))
        if isinstance(alternatives, list) and not alternatives:
            raise reader.fail(entry_path, "expected a Bastion model id or a list of them")
        ids = reader.strings(alternatives, entry_path)
        if str(model) in ids:
            raise reader.fail(entry_path, f"{model!r} cannot be its own fallback")
        if len(set(ids)) != len(ids):
            raise reader.fail(entry_path, "a fallback is listed twice")
        out[str(model)] = ids
    return out


def read_capabilities(reader: Reader, value: object,
                      path: Path_) -> Mapping[str, ModelCapabilities]:
    section = reader.mapping(value, path)
    out: dict[str, ModelCapabilities] = {}
    for model, entry in section.items():
        entry_path = (*path, str(model))
        fields = reader.mapping(entry, entry_path)
        reader.only_keys(fields, entry_path, ("tools", "json_schema", "vision",
                                              "context_tokens"))
        caps = ALL_SUPPORTED
        for name in ("tools", "json_schema", "vision"):
            if name in fields:
                caps = replace(caps, **{name: reader.boolean(fields[name], (*entry_path, name))})
        if fields.get("context_tokens") is not None:
            tokens = fields["context_tokens"]
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise reader.fail((*entry_path, "context_tokens"),
                                  "expected a positive integer or null")
            caps = replace(caps, context_tokens=tokens)
        out[str(model)] = caps
    return out


def read_embedding_dimensions(reader: Reader, value: object, path: Path_) -> Mapping[str, int]:
    sizes = dict(DEFAULT_DIMENSIONS)
    for model, size in reader.mapping(value, path).items():
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise reader.fail((*path, str(model)), "expected a positive whole number "
                              "(the model's embedding vector size)")
        sizes[str(model)] = size
    return sizes
