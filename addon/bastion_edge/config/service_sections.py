"""Reading where traffic goes and what serves it: `upstream`, `intercept`, `tts`,
`cutover` and `responses_state` of rules.yaml."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

from bastion_edge.config.canary_rules import read_canary
from bastion_edge.config.reader import Path_, Reader, RulesError, format_location
from bastion_edge.config.schema import (
    CutoverMode,
    CutoverRules,
    ResponsesStateRules,
    StickyBy,
    TtsRules,
    UpstreamRules,
)
from bastion_edge.config.store_url import read_store


def check_base_url(url: str, location: str, line: int | None = None) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RulesError(location, f"expected an https:// URL, got {url!r}", line)


def _https_url(reader: Reader, value: object, path: Path_, what: str = "a string") -> str:
    url = reader.string(value, path, what)
    check_base_url(url, format_location(path), reader.lines.get(path))
    return url


def read_upstream(reader: Reader, value: object, path: Path_) -> UpstreamRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, ("base_url", "ca_file", "response_timeout_seconds"))
    upstream = UpstreamRules()
    if "base_url" in section:
        upstream = replace(upstream, base_url=_https_url(
            reader, section["base_url"], (*path, "base_url"), "an https:// URL"))
    if section.get("ca_file") is not None:
        ca_file = reader.string(section["ca_file"], (*path, "ca_file"))
        upstream = replace(upstream, ca_file=ca_file)
    if "response_timeout_seconds" in section:
        timeout = reader.number(section["response_timeout_seconds"],
                                (*path, "response_timeout_seconds"))
        upstream = replace(upstream, response_timeout_seconds=timeout)
    return upstream


def read_intercept(reader: Reader, value: object, path: Path_) -> Mapping[str, object]:
    """`intercept:` sets openai_hosts and bastion_hosts (each when given)."""
    section = reader.mapping(value, path)
    reader.only_keys(section, path, ("openai_hosts", "bastion_hosts"))
    return {name: _hosts(reader, section[name], (*path, name))
            for name in ("openai_hosts", "bastion_hosts") if name in section}


def _hosts(reader: Reader, value: object, path: Path_) -> tuple[str, ...]:
    hosts = reader.strings(value, path)
    for i, host in enumerate(hosts):
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise reader.fail((*path, i), f"expected a host name, got {host!r}")
    return tuple(h.lower() for h in hosts)


def read_cutover(reader: Reader, value: object, path: Path_) -> CutoverRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, ("mode", "split_percent", "sticky_by", "openai_base_url",
                                     "mirror_max_in_flight", "mirror_streaming", "canary",
                                     "mirror_agreement_share", "mirror_agreement_per_second"))
    cutover = CutoverRules()
    if "mode" in section:
        mode: CutoverMode = reader.choice(section["mode"], (*path, "mode"),
                                          ("rewrite", "observe", "split", "mirror", "canary"))
        cutover = replace(cutover, mode=mode)
    if "split_percent" in section:
        percent = section["split_percent"]
        if isinstance(percent, bool) or not isinstance(percent, int | float) \
                or not 0 <= percent <= 100:
            raise reader.fail((*path, "split_percent"), "expected a number from 0 to 100")
        cutover = replace(cutover, split_percent=float(percent))
    if "sticky_by" in section:
        sticky: StickyBy = reader.choice(section["sticky_by"], (*path, "sticky_by"),
                                         ("app", "conversation"))
        cutover = replace(cutover, sticky_by=sticky)
    if "openai_base_url" in section:
        cutover = replace(cutover, openai_base_url=_https_url(
            reader, section["openai_base_url"], (*path, "openai_base_url")))
    if "mirror_max_in_flight" in section:
        limit = reader.positive_integer(section["mirror_max_in_flight"],
                                        (*path, "mirror_max_in_flight"))
        cutover = replace(cutover, mirror_max_in_flight=limit)
    if "mirror_streaming" in section:
        cutover = replace(cutover, mirror_streaming=reader.boolean(
            section["mirror_streaming"], (*path, "mirror_streaming")))
    if "mirror_agreement_share" in section:
        share = section["mirror_agreement_share"]
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise reader.fail((*path, "mirror_agreement_share"), "expected a share from 0 to 1")
        cutover = replace(cutover, mirror_agreement_share=float(share))
    if "mirror_agreement_per_second" in section:
        cutover = replace(cutover, mirror_agreement_per_second=reader.number(
            section["mirror_agreement_per_second"], (*path, "mirror_agreement_per_second")))
    if "canary" in section:
        cutover = replace(cutover, canary=read_canary(reader, section["canary"],
                                                      (*path, "canary")))
    return cutover


def read_responses_state(reader: Reader, value: object, path: Path_) -> ResponsesStateRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path,
                     ("store", "ttl_seconds", "max_responses", "encryption_key_env"))
    state = ResponsesStateRules()
    if "store" in section:
        state = replace(state, store=read_store(reader, section["store"], (*path, "store")))
    if "ttl_seconds" in section:
        ttl = section["ttl_seconds"]
        state = replace(state, ttl_seconds=None if ttl is None
                        else reader.number(ttl, (*path, "ttl_seconds")))
    if "max_responses" in section:
        cap = section["max_responses"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise reader.fail((*path, "max_responses"), "expected a positive integer or null")
        state = replace(state, max_responses=cap)
    if section.get("encryption_key_env") is not None:
        state = replace(state, encryption_key_env=reader.env_name(
            section["encryption_key_env"], (*path, "encryption_key_env")))
    return state


def read_tts(reader: Reader, value: object, path: Path_) -> TtsRules:
    section = reader.mapping(value, path)
    reader.only_keys(section, path, (
        "path", "default_voice", "language_code", "voices", "voice_languages",
        "no_ssml_voices", "sample_rate_hz",
    ))
    readers: dict[str, Callable[[object, Path_], object]] = {
        "path": lambda v, p: reader.string(v, p, "a path starting with /"),
        "default_voice": lambda v, p: None if v is None else reader.string(v, p),
        "language_code": reader.string,
        "voices": reader.string_map,
        "voice_languages": reader.string_map,
        "no_ssml_voices": lambda v, p: frozenset(reader.strings(v, p)),
        "sample_rate_hz": reader.positive_integer,
    }
    parsed = {key: read(section[key], (*path, key))
              for key, read in readers.items() if key in section}
    tts = replace(TtsRules(), **parsed)  # type: ignore[arg-type]
    if not tts.path.startswith("/"):
        raise reader.fail((*path, "path"), "expected a path starting with /")
    return tts
