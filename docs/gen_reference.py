"""Generate the reference pages from the code, so they cannot drift from it.

    python docs/gen_reference.py          # rewrite docs/reference/rules.md and cli.md
    python docs/gen_reference.py --check  # exit 1 if either is out of date

`docs/reference/rules.md` comes from two sources:
- the YAML keys the rules reader accepts, found by asking it: `parse_rules` is given a
  document with an unknown key at each section and its error ("unknown key; expected one
  of ...") lists the keys that section takes (`probe_keys`);
- the schema dataclasses (`walk_schema`: dataclasses.fields, type hints, defaults),
  for each key's type and default.
Descriptions are in `DOCS` below (the schema has no per-field docs); tests/unit/test_docs.py
fails when a key or a schema field has none, or when a description names a key that is gone.

`docs/reference/cli.md` is argparse's own help for every subcommand of `bastion-edge`.

The code is read through three names only (SCHEMA_ROOT, parse_rules, RulesError, and the
CLI's parser factory): repoint `_schema()` and `_cli_parser()` if they move.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCS_DIR = Path(__file__).resolve().parent
RULES_PAGE = DOCS_DIR / "reference" / "rules.md"
CLI_PAGE = DOCS_DIR / "reference" / "cli.md"
PROBE = "__docs_probe__"


# ------------------------------------------------------------------ seams into the code

def _schema() -> tuple[type, Callable[..., Any], type[Exception]]:
    """The schema root, the public reader and its error: the only imports of config."""
    from bastion_edge.config.rules import Rules, RulesError, parse_rules
    return Rules, parse_rules, RulesError


def _cli_parser() -> argparse.ArgumentParser:
    from bastion_edge.cli import main
    return main._parser()


# ------------------------------------------------------------------ the schema, walked

@dataclass(frozen=True)
class SchemaField:
    """One dataclass field reachable from the schema root.

    `path` uses attribute names; `[]` stands for an element of a tuple, `{}` for a
    value of a mapping (e.g. `models.[].choices.[].use`)."""

    path: tuple[str, ...]
    type: Any
    default: Any  # dataclasses.MISSING when the field has none

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def walk_schema(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[SchemaField]:
    """Every field of `cls`, recursing into dataclass fields and container elements."""
    hints = typing.get_type_hints(cls, include_extras=False)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        hint = hints[f.name]
        yield SchemaField((*prefix, f.name), hint, default)
        for marker, inner in _nested(hint):
            yield from walk_schema(inner, (*prefix, f.name, *marker))


def _nested(hint: Any) -> Iterator[tuple[tuple[str, ...], type]]:
    """Dataclasses inside a type: itself, a tuple's element, a mapping's value."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        yield (), hint
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, frozenset) and args:
        for marker, inner in _nested(args[0]):
            yield ("[]", *marker), inner
    elif origin is not None and _is_mapping(origin) and len(args) == 2:
        for marker, inner in _nested(args[1]):
            yield ("{}", *marker), inner
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested(arg)


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


# ------------------------------------------------------------------ the YAML keys, probed

# Where a section's keys are checked, as a document with PROBE as an unknown key there.
# `<id>` marks a key the user chooses (a model id); `[]` a list element.
PROBES: dict[str, Any] = {
    "": {PROBE: 1},
    "upstream": {"upstream": {PROBE: 1}},
    "intercept": {"intercept": {PROBE: 1}},
    "keys": {"keys": {PROBE: 1}},
    "keys.select[]": {"keys": {"select": [{PROBE: 1}]}},
    "keys.select[].when": {"keys": {"select": [{"env": "X", "when": {PROBE: 1}}]}},
    "clients": {"clients": {PROBE: 1}},
    "clients.apps[]": {"clients": {"apps": [{PROBE: 1}]}},
    "clients.apps[].quota": {"clients": {"apps": [
        {"name": "a", "secret_sha256": "0" * 64, "quota": {PROBE: 1}}]}},
    "clients.default_quota": {"clients": {"default_quota": {PROBE: 1}}},
    "egress": {"egress": {PROBE: 1}},
    "models.<id>[]": {"models": {"gpt-4o": [{PROBE: 1}]}},
    "models.<id>[].when": {"models": {"gpt-4o": [{"use": "x", "when": {PROBE: 1}}]}},
    "capabilities.<id>": {"capabilities": {"x": {PROBE: 1}}},
    "tts": {"tts": {PROBE: 1}},
    "cutover": {"cutover": {PROBE: 1}},
    "cutover.canary": {"cutover": {"canary": {PROBE: 1}}},
    "cutover.canary.gates": {"cutover": {"canary": {"gates": {PROBE: 1}}}},
    "responses_state": {"responses_state": {PROBE: 1}},
    "batches": {"batches": {PROBE: 1}},
    "usage": {"usage": {PROBE: 1}},
    "usage.prices.<id>": {"usage": {"prices": {"x": {PROBE: 1}}}},
    "limits": {"limits": {PROBE: 1}},
}

_EXPECTED = re.compile(r"unknown key; expected one of (.*?)(?: \(line \d+\))?$")


def probe_keys(section: str) -> tuple[str, ...]:
    """The keys the reader accepts at `section` (a PROBES entry), from its own error."""
    import yaml

    _, parse_rules, rules_error = _schema()
    try:
        parse_rules(yaml.safe_dump(PROBES[section]))
    except rules_error as e:
        found = _EXPECTED.search(str(e))
        if found:
            return tuple(k.strip() for k in found.group(1).split(","))
        raise AssertionError(f"probe of {section or 'the top level'}: {e}") from e
    raise AssertionError(f"probe of {section or 'the top level'} was accepted")


def endpoint_names() -> tuple[str, ...]:
    """The endpoint names a condition's `endpoint:` accepts, from the reader's error."""
    import yaml

    _, parse_rules, rules_error = _schema()
    document = {"models": {"gpt-4o": [{"use": "x", "when": {"endpoint": PROBE}}]}}
    try:
        parse_rules(yaml.safe_dump(document))
    except rules_error as e:
        found = re.search(r"expected one of (.*?)(?: \(line \d+\))?$", str(e))
        if found:
            return tuple(k.strip() for k in found.group(1).split(","))
        raise AssertionError(f"probe of endpoint names: {e}") from e
    raise AssertionError("probe of endpoint names was accepted")


# Keys the user names (a model id): no reader error lists them, so they are declared.
CHOSEN_KEYS = ("models.<id>", "capabilities.<id>", "usage.prices.<id>")


def yaml_keys() -> list[str]:
    """Every YAML key path the reader accepts, e.g. `upstream.base_url`, `models.<id>`."""
    out: list[str] = []
    for section in PROBES:
        for key in probe_keys(section):
            out.append(f"{section}.{key}" if section else key)
    for chosen in CHOSEN_KEYS:  # right after its parent
        parent = chosen.rsplit(".", 1)[0]
        out.insert(out.index(parent) + 1, chosen)
    return out


# ------------------------------------------------------------------ YAML key -> schema field

# Where a YAML key's value lands in the schema when the names differ (or the key stands
# for a container element). Keys not listed land on the same dotted path.
FIELD_OF: dict[str, str] = {
    "intercept.openai_hosts": "openai_hosts",
    "intercept.bastion_hosts": "bastion_hosts",
    "keys.default_env": "key_env",
    "keys.default_file": "key_file",
    "keys.select": "key_rules",
    "keys.select[].when": "key_rules.[].when",
    "keys.select[].env": "key_rules.[].env",
    "models.<id>": "models.[].choices",
    "models.<id>[].use": "models.[].choices.[].use",
    "models.<id>[].when": "models.[].choices.[].when",
    "capabilities.<id>": "capabilities",
    "clients.apps[].name": "clients.apps.[].name",
    "clients.apps[].secret_sha256": "clients.apps.[].secret_sha256",
    "clients.apps[].bastion_key_env": "clients.apps.[].bastion_key_env",
    "clients.apps[].bastion_key_file": "clients.apps.[].bastion_key_file",
    "clients.apps[].quota": "clients.apps.[].quota",
    **{f"clients.apps[].quota.{name}": f"clients.apps.[].quota.{name}"
       for name in ("requests_per_minute", "tokens_per_minute", "tokens_per_day")},
}
# Keys with no schema field of their own (a price is a plain pair) that must be given.
REQUIRED_KEYS = ("usage.prices.<id>.input", "usage.prices.<id>.output")
for _cond in ("keys.select[].when", "models.<id>[].when"):
    _base = FIELD_OF[_cond]
    FIELD_OF.update({
        f"{_cond}.endpoint": f"{_base}.endpoints", f"{_cond}.has_image": f"{_base}.has_image",
        f"{_cond}.prompt_tokens_over": f"{_base}.prompt_tokens_over",
        f"{_cond}.header": f"{_base}.headers",
        f"{_cond}.app_key_sha256": f"{_base}.app_key_sha256",
        f"{_cond}.client": f"{_base}.clients", f"{_cond}.app": f"{_base}.apps",
    })
for _cap in ("tools", "json_schema", "vision", "context_tokens"):
    FIELD_OF[f"capabilities.<id>.{_cap}"] = f"capabilities.{{}}.{_cap}"

# Schema fields no YAML key sets directly (derived from a key, or bookkeeping).
NOT_FROM_YAML: dict[str, str] = {
    "source": "the rules file's path",
    "sha256": "the rules file's sha256",
    "models.[].pattern": "the key of a models: entry",
    "egress.allow.[].text": "parsed from an egress.allow entry",
    "egress.allow.[].host": "parsed from an egress.allow entry",
    "egress.allow.[].network": "parsed from an egress.allow entry",
    "egress.allow.[].port": "parsed from an egress.allow entry",
}


def field_for(key: str) -> str:
    return FIELD_OF.get(key, key)


# ------------------------------------------------------------------ descriptions

# YAML key -> description; a tuple (shape, description) when the YAML shape differs from
# the schema's type (a string or a list, a mapping written as a list, ...).
DOCS: dict[str, str | tuple[str, str]] = {
    "upstream": "Where Bastion is.",
    "upstream.base_url": "Bastion's base URL; https only. `BASTION_BASE_URL` overrides it.",
    "upstream.ca_file": "A CA file to verify Bastion's certificate with, instead of the "
                        "system store. `BASTION_UPSTREAM_CA` overrides it.",
    "upstream.response_timeout_seconds": "No response headers from Bastion by then: "
                                         "504 `upstream_timeout`.",
    "intercept": ("mapping", "The only hosts decrypted; every other host is tunnelled "
                  "untouched."),
    "intercept.openai_hosts": ("host or list of hosts",
                               "Hosts whose traffic is rewritten for Bastion."),
    "intercept.bastion_hosts": ("host or list of hosts",
                                "Bastion's hosts: observed, `http://` upgraded to https, "
                                "the app's own key kept."),
    "keys": ("mapping", "Which Bastion key a request spends. Keys never go in rules.yaml: "
             "a literal `key:`/`secret:`-style field is refused."),
    "keys.default_env": "The environment variable holding the Bastion key.",
    "keys.default_file": "A file holding the Bastion key (e.g. a mounted Secret), re-read "
                         "when it changes. Give this or `default_env`, not both.",
    "keys.select": ("list of {when, env}",
                    "Per-request keys: the first entry whose `when` holds picks `env`."),
    "keys.select[].when": ("condition", "See [conditions](#conditions)."),
    "keys.select[].env": "The environment variable holding that key.",
    "clients": "Apps that may use the proxy; see [Security](../operate/security.md).",
    "clients.apps": ("list of apps", "With any app declared, every request needs its proxy "
                     "credentials (else 407)."),
    "clients.apps[].name": "The app's name: the user part of its proxy URL, a rule "
                           "condition (`app`), a metrics label.",
    "clients.apps[].secret_sha256": "sha256 hex of the app's proxy secret "
                                    "(`bastion-edge app add NAME` prints it).",
    "clients.apps[].bastion_key_env": "The app's own Bastion key, from this variable.",
    "clients.apps[].bastion_key_file": "The app's own Bastion key, from this file "
                                       "(re-read when it changes).",
    "clients.apps[].quota": ("mapping", "The app's quota (`{}` or null: none, not the "
                             "default); see [Quotas](../operate/quotas.md)."),
    "clients.apps[].quota.requests_per_minute": "Requests per clock minute (UTC-aligned).",
    "clients.apps[].quota.tokens_per_minute": "Tokens (input + output, as the upstream "
                                              "reports them) per clock minute.",
    "clients.apps[].quota.tokens_per_day": "Tokens per UTC day.",
    "clients.default_quota": ("mapping", "The quota of apps without a `quota:` of their own "
                              "(same keys as `quota:`). Default: none."),
    "clients.default_quota.requests_per_minute": "As in `quota:`.",
    "clients.default_quota.tokens_per_minute": "As in `quota:`.",
    "clients.default_quota.tokens_per_day": "As in `quota:`.",
    "clients.quota_store_outage": ("fail_open or fail_closed",
                                   "When the quota store is unreachable: let requests through "
                                   "unmetered (default) or refuse them with 503 "
                                   "`quota_store_unavailable`."),
    "clients.transparent_app": "The app that traffic from transparent listeners (which "
                               "carry no credentials) belongs to.",
    "egress": "Exceptions to the egress policy for tunnels and plain-http forwards.",
    "egress.allow": ("host, host:port, CIDR, or a list",
                     "Destinations apps may reach though the policy refuses them "
                     "(loopback, link-local, the proxy's own ports)."),
    "models": ("mapping: OpenAI id or glob -> Bastion id or list of choices",
               "The model table: exact ids first, then globs in file order."),
    "models.<id>": ("Bastion id, or list of {when, use}",
                    "One OpenAI id (or glob) and what serves it; in a list, the first "
                    "choice whose `when` holds wins."),
    "models.<id>[].use": "The Bastion model id.",
    "models.<id>[].when": ("condition", "See [conditions](#conditions); no `when`: always."),
    "unmapped_models": "An OpenAI id with no mapping: `reject` (400 `model_not_mapped`) or "
                       "`pass_through`.",
    "reply_model": "The `model` apps see in replies: `upstream` (Bastion's id) or "
                   "`original` (their own, also inside SSE chunks).",
    "tts": "Text to speech: OpenAI's `/v1/audio/speech` into Riva's contract.",
    "tts.path": "Riva's TTS path under Bastion's host.",
    "tts.default_voice": "The Riva voice for a requested voice that is neither in `voices` "
                         "nor a Riva voice name; `null`: such a request is refused "
                         "(400 `unknown_voice`).",
    "tts.language_code": "The language sent with a voice when neither `voice_languages` "
                         "nor the voice's name gives one.",
    "tts.voices": "OpenAI voice name -> Riva voice name.",
    "tts.voice_languages": "Riva voice -> its language code.",
    "tts.no_ssml_voices": ("voice or list of voices", "Riva voices without SSML support."),
    "tts.sample_rate_hz": "The sample rate asked of Riva (`sample_rate_hz`).",
    "cutover": "Moving traffic from OpenAI to Bastion; see "
               "[Rehearse a cutover](../how-to/cutover.md).",
    "cutover.mode": "`rewrite` (all to Bastion), `observe` (dry run, all to OpenAI), "
                    "`split`, `mirror`, or `canary` (split at a percent that moves by "
                    "evidence).",
    "cutover.split_percent": "In `split`: the share of traffic Bastion gets (0-100).",
    "cutover.sticky_by": "In `split`: keep an `app` or a `conversation` on one side.",
    "cutover.openai_base_url": "Where observe/split/mirror send OpenAI traffic. "
                               "`BASTION_OPENAI_URL` overrides it.",
    "cutover.mirror_max_in_flight": "In `mirror`: copies in flight at once; beyond it a "
                                    "copy is skipped.",
    "cutover.mirror_streaming": "In `mirror`: also copy streamed requests.",
    "cutover.mirror_agreement_share": "In `mirror`: the share (0-1) of chat and Responses "
                                      "pairs whose answers are compared (bge-m3 similarity, "
                                      "tool calls, json_schema).",
    "cutover.mirror_agreement_per_second": "In `mirror`: at most this many answer "
                                           "comparisons a second, per process.",
    "cutover.canary": "In `canary`: the steps and the gates that move Bastion's share; "
                      "`bastion-edge cutover status` shows them.",
    "cutover.canary.steps": "Percents of traffic to Bastion, increasing, ending at 100.",
    "cutover.canary.min_requests": "Exchanges each side needs on a step before a decision.",
    "cutover.canary.min_seconds": "Seconds a step lasts at least.",
    "cutover.canary.gates": "Each judged on its 95 % interval: fails only when the "
                            "interval excludes passing; `null` turns a gate off.",
    "cutover.canary.gates.max_error_rate_increase_pp": "Bastion's error rate less OpenAI's, "
                                                      "in points (Newcombe interval).",
    "cutover.canary.gates.max_p95_ratio": "Bastion's p95 latency over OpenAI's (exact "
                                          "order-statistic interval).",
    "cutover.canary.gates.min_agreement": "Share of mirrored answers that agree (Wilson "
                                          "interval); off while none were judged.",
    "cutover.canary.on_fail": "`rollback` (to 0 %) or `hold` (stay, until a hand "
                              "`bastion-edge cutover` event).",
    "responses_state": "Where the proxy keeps Responses state (Bastion keeps none).",
    "responses_state.store": "`sqlite` (a file in the confdir), `sqlite:///path`, or "
                             "`redis://` / `rediss://` (replicas share it).",
    "responses_state.ttl_seconds": "How long a conversation is kept; a new turn renews "
                                   "it. `null`: until evicted or deleted.",
    "responses_state.max_responses": "Least recently used evicted beyond this; `null`: "
                                     "no cap.",
    "responses_state.encryption_key_env": "A variable holding Fernet key(s): bodies "
                                          "encrypted at rest.",
    "fallbacks": ("mapping: Bastion id -> id or list of ids",
                  "Models in the same class, tried in order (not transitive) when the "
                  "target is unlisted, lacks a capability, or answers 404."),
    "capabilities": "What a Bastion model supports; an unlisted model or field is "
                    "supported.",
    "capabilities.<id>": ("mapping", "One Bastion model's capabilities."),
    "capabilities.<id>.tools": "Chat `tools`/`functions`, Responses `tools`.",
    "capabilities.<id>.json_schema": "`json_schema` in chat `response_format` or "
                                     "Responses `text.format`.",
    "capabilities.<id>.vision": "Image input.",
    "capabilities.<id>.context_tokens": "Prompt size limit (estimated tokens); `null`: "
                                        "none known.",
    "models_refresh_seconds": "How often Bastion's `GET /v1/models` is read, per key.",
    "embedding_dimensions": "Model id (OpenAI's or Bastion's) -> native embedding vector "
                            "size; added to the built-in ones.",
    "batches": "The proxy's own Files and Batch APIs.",
    "batches.store": "`sqlite` (in the confdir), `sqlite:///path`, or `redis://` "
                     "(replicas share metadata, work and bytes).",
    "batches.max_file_bytes": "Largest upload; over it: 413 `file_too_large`.",
    "batches.max_lines": "Lines per batch input file.",
    "batches.concurrency": "Lines in flight, all batches together.",
    "batches.requests_per_minute": "Lines started per minute; `null`: unbounded.",
    "batches.encryption_key_env": "A variable holding Fernet key(s): file bytes and line "
                                  "results encrypted at rest.",
    "usage": "Token accounting and your price table.",
    "usage.stream_usage": "Ask streamed chat/completions for their usage chunk (and strip "
                          "it from what the app gets).",
    "usage.currency": "A label for the report; nothing is converted.",
    "usage.prices": ("mapping: model id or glob -> {input, output}",
                     "Your prices per million tokens, for the report's cost estimate."),
    "usage.prices.<id>": ("{input, output}", "One model's prices; both are required."),
    "usage.prices.<id>.input": ("number >= 0", "Price of a million input tokens."),
    "usage.prices.<id>.output": ("number >= 0", "Price of a million output tokens."),
    "limits": "What one client may cost the proxy; see [Limits](../operate/limits.md).",
    "limits.max_json_body_bytes": "A body the proxy buffers; over it: 413 "
                                  "`request_too_large`.",
    "limits.header_timeout_seconds": "No complete request headers by then (after connect "
                                     "or CONNECT): closed.",
    "limits.idle_timeout_seconds": "No new request on a kept-alive connection, or no new "
                                   "byte of a request body, by then: closed.",
    "limits.max_buffered_body_bytes_total": "All request bodies the process buffers at once "
                                            "(at least `max_json_body_bytes`); past it: 503 "
                                            "`server_overloaded` with `retry-after`.",
    "limits.max_client_connections": "More at once are refused at accept (per worker).",
    "limits.max_header_bytes": "All request header lines together; over it: 431.",
    "limits.max_header_count": "Request header fields; over it: 431.",
}
for _cond in ("keys.select[].when", "models.<id>[].when"):
    DOCS.update({
        f"{_cond}.endpoint": ("endpoint or list", "The request's endpoint, e.g. "
                              "`chat.completions`, `responses`, `embeddings`."),
        f"{_cond}.has_image": "The request has image input.",
        f"{_cond}.prompt_tokens_over": ("integer >= 0", "The estimated prompt (about 4 "
                                        "characters per token) is larger."),
        f"{_cond}.header": ("mapping: header name -> glob",
                            "The request carries these headers (values may be globs)."),
        f"{_cond}.app_key_sha256": ("hex prefix or list", "sha256 prefix (8-64 hex digits) "
                                    "of the app's own key: `bastion-edge key-hash`."),
        f"{_cond}.client": ("IP, CIDR, or list", "The client's address."),
        f"{_cond}.app": ("name or list", "The authenticated app (`clients.apps`)."),
    })


# ------------------------------------------------------------------ rendering

def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if hint in (str, float, int, bool):
        return {str: "string", float: "number", int: "integer", bool: "boolean"}[hint]
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin in (tuple, frozenset) and args:
        return f"list of {describe_type(args[0])}"
    if origin is not None and _is_mapping(origin) and len(args) == 2:
        return f"mapping of {describe_type(args[1])}"
    if dataclasses.is_dataclass(hint):
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def describe_default(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if dataclasses.is_dataclass(value):
        return ""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, int | float):
        return f"`{value}`"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, tuple | frozenset | list):
        return "`[]`" if not value else "`[" + ", ".join(map(str, sorted(value)
                                                              if isinstance(value, frozenset)
                                                              else value)) + "]`"
    if isinstance(value, Mapping):
        if not value:
            return "`{}`"
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    return f"`{value}`"


def render_rules() -> str:
    fields = {f.dotted: f for f in walk_schema(_schema()[0])}
    keys = yaml_keys()
    lines = [
        "# rules.yaml reference",
        "",
        "<!-- generated by docs/gen_reference.py from the rules schema; do not edit -->",
        "",
        "Every key `bastion-edge check` accepts, with its type and default. `<id>` is a "
        "model id you choose; `[]` an entry of a list. A condition (`when:`) holds when all "
        "its tests hold. Keys and secrets never go in this file; environment variables "
        "override some keys (see [Environment variables](environment.md)).",
        "",
    ]
    sections: dict[str, list[str]] = {}
    conditions: dict[str, list[str]] = {}
    for key in keys:
        head, dot, _ = key.rpartition(".when.")
        if dot:
            conditions.setdefault(head + ".when", []).append(key)
            continue
        top = key.split(".", 1)[0].split("[", 1)[0]
        sections.setdefault(top, []).append(key)
    for top, members in sections.items():
        lines += [f"## `{top}`", "", "| key | type | default | description |",
                  "|---|---|---|---|"]
        lines += [_row(key, fields) for key in members]
        lines.append("")
    leaf_sets = {tuple(k.rpartition(".")[2] for k in ks) for ks in conditions.values()}
    lines += ["## Conditions", "",
              "A `when:` (in " + ", ".join(f"`{c}`" for c in conditions) + ") holds when "
              "all the tests it gives hold.", ""]
    for members in conditions.values():
        lines += ["| test | type | default | description |", "|---|---|---|---|"]
        lines += [_row(key, fields, shown=key.rpartition(".")[2]) for key in members]
        lines.append("")
        if len(leaf_sets) == 1:
            break
    lines += ["Endpoint names: " + ", ".join(f"`{e}`" for e in endpoint_names()) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def _row(key: str, fields: Mapping[str, SchemaField], shown: str | None = None) -> str:
    doc = DOCS.get(key, "")
    shape, text = doc if isinstance(doc, tuple) else (None, doc)
    field = fields.get(field_for(key))
    if shown is not None:  # a condition's test: absent means not tested
        type_text = shape or (describe_type(field.type) if field else "")
        return f"| `{shown}` | {type_text} | not tested | {text} |"
    if field is None:
        type_text, default = shape or "", "required" if key in REQUIRED_KEYS else ""
    else:
        type_text = shape or describe_type(field.type)
        default = describe_default(field.default)
        if shape and shape.startswith("mapping") and default == "`[]`":
            default = "`{}`"  # a mapping in YAML, kept as a tuple of entries
        if ".[]." in field.dotted or ".{}." in field.dotted:
            default = "required" if field.default is dataclasses.MISSING else default
    return f"| `{key}` | {type_text} | {default} | {text} |"


def render_cli() -> str:
    parser = _cli_parser()
    parser.prog = "bastion-edge"
    lines = [
        "# Command line",
        "",
        "<!-- generated by docs/gen_reference.py from the argparse parser; do not edit -->",
        f"<!-- argparse of Python {sys.version_info[0]}.{sys.version_info[1]} -->",
        "",
        "Every subcommand's `--help`, as `bastion-edge` prints it.",
        "",
    ]
    for name, sub in _subcommands(parser, "bastion-edge"):
        lines += [f"## `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _subcommands(parser: argparse.ArgumentParser,
                 name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _subcommands(sub, f"{name} {sub_name}")


def render_all() -> dict[Path, str]:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal: fix the width
    return {RULES_PAGE: render_rules(), CLI_PAGE: render_cli()}


def main(argv: list[str]) -> int:
    pages = render_all()
    stale = [p for p, text in pages.items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path} is out of date: run python docs/gen_reference.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
