"""The planner: a request's head, then its body, plus one rules snapshot -> one plan.

    plan = plan_head(head, policy, environ)        # before the body: route, key, streaming
    plan = plan_body(plan, ParsedBody(raw), policy, history)   # model, store, chain, bytes

Both are pure (no mitmproxy, no I/O) and never raise for a bad request: a refusal is a
plan whose `refusal` is the envelope to answer. The head step already points every
OpenAI-bound request at Bastion without the app's credentials (fail closed); only a
split by conversation waits for the body to choose between Bastion and OpenAI.

To add a rule condition: a field on `RequestFacts` and a test in `Condition.matches`.
To add an endpoint: its path in `core/facts.py`, then its body step here.
The head step lives in `head_step.py` (re-exported here); `plan_needs.py` says what the
body step needs fetched first (Responses history, referenced items).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bastion_edge.core.cutover import OPENAI, conversation_key, destination_for
from bastion_edge.core.facts import (
    IMAGES_GENERATIONS,
    RESPONSES,
    RequestFacts,
    facts_from_json,
)
from bastion_edge.core.head_step import (
    APP_CREDENTIAL_HEADERS,
    JSON_ENDPOINTS,
    STREAM_UPLOADS_OVER,
    Policy,
    partition_of,
    plan_head,
    refused,
    sticky_key,
    to_openai,
    with_resolution,
)
from bastion_edge.core.item_refs import referenced_ids, resolve_references
from bastion_edge.core.keys import KeyFileReader
from bastion_edge.core.model_choice import choose_model
from bastion_edge.core.model_map import Resolution
from bastion_edge.core.plan import (
    REWRITE_KEY,
    REWRITE_MODEL,
    REWRITE_STORE,
    BodyStep,
    Decision,
    Destination,
    Plan,
    Route,
)
from bastion_edge.core.request import ParsedBody, requested_model_of
from bastion_edge.core.request_adapt import adapt_for_bastion
from bastion_edge.core.responses_request import (
    History,
    Item,
    expand_request,
    input_as_items,
    turn_from_request,
)
from bastion_edge.core.rewrite import decide_model, model_not_string_error
from bastion_edge.core.routing import Target
from bastion_edge.core.usage import STREAM_USAGE_NOTE, adds_stream_usage, with_stream_usage
from bastion_edge.errors import ApiError, bad_request
from bastion_edge.streams.form_checks import form_field_error
from bastion_edge.streams.multipart import boundary_from_content_type, replace_form_field

# OpenAI's default when images.generations omits `model`; Bastion requires one.
IMAGES_DEFAULT_MODEL = "dall-e-2"

# ---------------------------------------------------------------------- body step

__all__ = [  # the head step's names, re-exported: callers import the planner
    "APP_CREDENTIAL_HEADERS", "IMAGES_DEFAULT_MODEL", "JSON_ENDPOINTS",
    "STREAM_UPLOADS_OVER", "Policy", "answered_from_store", "form_model",
    "history_wanted", "partition_of", "plan_body", "plan_head", "references_wanted",
    "refused", "sticky_key", "to_openai",
]


def history_wanted(plan: Plan, body: ParsedBody) -> str | None:
    """The `previous_response_id` whose stored conversation this create needs, if any."""
    if (plan.refusal is not None or plan.endpoint != RESPONSES
            or plan.body_step is not BodyStep.JSON):
        return None
    parsed = body.json_or_none()
    previous = parsed.get("previous_response_id") if parsed is not None else None
    if previous is None:
        return None
    if not isinstance(previous, str):
        raise bad_request("Invalid type for 'previous_response_id': expected a string.",
                          "invalid_type", "previous_response_id")
    return previous


def references_wanted(plan: Plan, body: ParsedBody, history: History | None) -> list[str]:
    """The ids of the `item_reference` items this Responses create (with its expanded
    history) names: the stored items the body step needs."""
    if (plan.refusal is not None or plan.endpoint != RESPONSES
            or plan.body_step is not BodyStep.JSON):
        return []
    in_history = history is not None and any(
        item.get("type") == "item_reference" for item in history.items)
    if b'"item_reference"' not in body.raw and not in_history:
        return []
    parsed = body.json_or_none()
    try:
        items = input_as_items(parsed.get("input")) if parsed is not None else []
    except ValueError:
        return []  # the body step refuses it
    return referenced_ids([*(history.items if history is not None else []), *items])


def plan_body(
    plan: Plan, body: ParsedBody, policy: Policy, environ: Mapping[str, str],
    history: History | None = None, files: KeyFileReader | None = None,
    referenced: Mapping[str, Item] | None = None, available: frozenset[str] | None = None,
    canary_percent: float = 0.0,
) -> Plan:
    """The plan once the body is known (a streamed body keeps its head plan).

    `history` is the stored conversation of a `previous_response_id`; `referenced` the
    stored items that `references_wanted` named; `available` the Bastion models listed
    now (a snapshot of the live list; None: not read yet, every model counts as listed);
    `canary_percent` Bastion's share under `cutover.mode: canary` (as in `plan_head`).
    """
    if plan.refusal is not None:
        return plan
    try:
        if plan.body_step is BodyStep.CONVERSATION:
            plan = _split_by_conversation(plan, body, policy, environ, files, canary_percent)
        if plan.body_step is BodyStep.JSON:
            return _rewrite_json(plan, body, policy, history, referenced, available)
        if plan.body_step is BodyStep.FORM:
            return _rewrite_form(plan, body, policy, available)
        if plan.body_step is BodyStep.OBSERVE:
            return _observe(plan, body, policy, available)
    except ApiError as e:
        return refused(plan, e, plan.original_model or requested_model_of(body))
    return plan


def _split_by_conversation(
    plan: Plan, body: ParsedBody, policy: Policy, environ: Mapping[str, str],
    files: KeyFileReader | None, canary_percent: float,
) -> Plan:
    parsed = body.json_or_none()
    key = conversation_key(parsed) if parsed is not None else None
    sticky = key or sticky_key(plan.facts)
    cutover = policy.rules.cutover
    if destination_for(cutover, sticky, canary_percent) == OPENAI:
        return to_openai(plan._replace(body_step=BodyStep.JSON), _query(plan.route.target),
                         policy.rules, environ, files)
    assert plan.key is not None
    route = Route(Destination.BASTION, plan.route.target,
                  {"authorization": f"Bearer {plan.key.key}"}, plan.route.drop_headers)
    return plan._replace(route=route, body_step=BodyStep.JSON,
                   rewrites=(*plan.rewrites, REWRITE_KEY))


def _query(target: Target) -> str:
    return target.path.partition("?")[2]


@dataclass(frozen=True, slots=True)
class _JsonRewrite:
    body: dict[str, Any]
    changed: bool
    resolution: Resolution | None
    requested: str | None
    rewrites: tuple[str, ...]
    facts: RequestFacts
    notes: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()
    fallback_reason: tuple[str, str] | None = None


def _map_json(parsed: dict[str, Any], plan: Plan, policy: Policy,
              content_from: dict[str, Any] | None = None,
              available: frozenset[str] | None = None) -> _JsonRewrite:
    """Model (content-aware) and `store: false` on a copy of the app's JSON body."""
    work = dict(parsed)
    content = facts_from_json(content_from if content_from is not None else work)
    facts = RequestFacts(plan.facts.endpoint, plan.facts.headers, plan.facts.app_key_sha256,
                         plan.facts.client_ip, content.has_image, content.prompt_tokens,
                         plan.facts.app)
    rewrites: list[str] = []
    requested = work.get("model")
    injected = requested is None and plan.endpoint == IMAGES_GENERATIONS
    if injected:
        requested = IMAGES_DEFAULT_MODEL
    resolution = None
    notes: list[str] = []
    fallback_models: tuple[str, ...] = ()
    fallback_reason = None
    if isinstance(requested, str):
        resolution = decide_model(requested, facts, policy.rules, policy.models)
        upstream = resolution.upstream if resolution is not None else requested
        choice = choose_model(upstream, plan.endpoint, work, facts.has_image,
                              facts.prompt_tokens, policy.rules, available)
        if choice is not None:
            resolution, upstream = _chosen(resolution, requested, choice.model), choice.model
            fallback_models, notes = choice.fallbacks, list(choice.notes)
            fallback_reason = choice.passed_over
        if injected or upstream != requested:
            work["model"] = upstream
            rewrites.append(REWRITE_MODEL)
    elif requested is not None:
        raise model_not_string_error()
    if isinstance(requested, str):  # fields Bastion takes differently from OpenAI
        adapted = adapt_for_bastion(work, plan.endpoint, requested, work["model"], policy.rules)
        rewrites += adapted.rewrites
        notes += adapted.notes
    if plan.endpoint == RESPONSES and work.get("store") is not False:
        work["store"] = False
        rewrites.append(REWRITE_STORE)
    return _JsonRewrite(work, bool(rewrites), resolution,
                        requested if isinstance(requested, str) else None, tuple(rewrites), facts,
                        tuple(notes), fallback_models, fallback_reason)


def _chosen(resolution: Resolution | None, requested: str, model: str) -> Resolution | None:
    """The mapping once the model choice (fallbacks, capabilities) is applied."""
    if resolution is not None:
        return replace(resolution, upstream=model)
    return None if model == requested else Resolution(requested, model, "fallbacks", 0)


def _rewrite_json(plan: Plan, body: ParsedBody, policy: Policy,
                  history: History | None, referenced: Mapping[str, Item] | None,
                  available: frozenset[str] | None = None) -> Plan:
    parsed = body.json_object()
    notes = plan.notes
    expanded = None
    try:
        if history is not None:  # the model is chosen on the whole conversation
            expanded = expand_request(parsed, history.items)
            notes = (*notes, f"expanded previous_response_id: {len(history.items)} items")
        if referenced is not None:  # ids named by item_reference -> the stored items
            expanded = dict(expanded if expanded is not None else parsed)
            items = input_as_items(expanded.get("input"))
            expanded["input"] = resolve_references(items, referenced)
            notes = (*notes, f"resolved item_reference: {len(referenced)} items")
    except ValueError as e:
        raise bad_request(f"Invalid 'input': {e}", "invalid_value", "input") from e
    mapped = _map_json(expanded if expanded is not None else parsed, plan, policy,
                       available=available)
    if expanded is not None and plan.endpoint == RESPONSES and parsed.get("store") is not False:
        mapped = replace(mapped, rewrites=tuple(dict.fromkeys((*mapped.rewrites,
                                                               REWRITE_STORE))))
    app_store = parsed.get("store") if isinstance(parsed.get("store"), bool) else None
    capture = None
    if plan.endpoint == RESPONSES and app_store is not False:
        try:
            capture = turn_from_request(parsed, plan.partition,
                                        history.ancestors if history is not None else ())
        except ValueError as e:
            raise bad_request(f"Invalid 'input': {e}", "invalid_value", "input") from e
    new_body = None
    strip_usage = adds_stream_usage(plan.endpoint, mapped.body, policy.rules.usage.stream_usage)
    if strip_usage:  # the app's stream stays as it was (core/usage_stream.py)
        mapped = replace(mapped, body=with_stream_usage(mapped.body),
                         notes=(*mapped.notes, STREAM_USAGE_NOTE))
    if mapped.changed or expanded is not None or strip_usage:
        new_body = _serialise(mapped.body)
    resolution = mapped.resolution
    return plan._replace(
        facts=mapped.facts, stream=parsed.get("stream") is True, app_store=app_store,
        body=new_body, capture=capture, notes=(*notes, *mapped.notes),
        strip_usage=strip_usage, rewrites=(*plan.rewrites, *mapped.rewrites),
        fallback_models=mapped.fallback_models, fallback_reason=mapped.fallback_reason,
        resolution=plan.resolution if resolution is None else resolution,
        upstream_model=plan.upstream_model if resolution is None else resolution.upstream,
        original_model=plan.original_model if resolution is None
        else mapped.requested or resolution.requested)


def _rewrite_form(plan: Plan, body: ParsedBody, policy: Policy,
                  available: frozenset[str] | None = None) -> Plan:
    boundary = boundary_from_content_type(plan.facts.headers.get("content-type", ""))
    if boundary is None or not body.raw:
        return plan
    outcome: list[Plan] = []

    def replace_model(old: bytes) -> bytes:
        decided = form_model(outcome[-1] if outcome else plan, policy, old, streaming=False,
                             available=available)
        outcome.append(decided.plan)
        return decided.value

    new_raw, _ = replace_form_field(body.raw, boundary, b"model", replace_model)
    refusal = form_field_error(len(outcome), body.raw, boundary)
    if refusal is not None:
        raise refusal
    final = outcome[-1] if outcome else plan
    return final._replace(body=new_raw if new_raw != body.raw else None)


@dataclass(frozen=True, slots=True)
class FormModel:
    """The `model` field's new value, and the plan that records the decision."""

    value: bytes
    plan: Plan


def form_model(plan: Plan, policy: Policy, old: bytes, *, streaming: bool,
               available: frozenset[str] | None = None) -> FormModel:
    """A multipart `model` field's value: mapped (then chosen among its fallbacks), kept,
    or (buffered only) refused. A streamed upload keeps no fallbacks: it cannot be
    replayed."""
    requested = old.decode("utf-8", "replace")
    try:
        resolution = decide_model(requested, plan.facts, policy.rules, policy.models)
        upstream = resolution.upstream if resolution is not None else requested
        choice = choose_model(upstream, plan.endpoint, {}, False, 0, policy.rules, available)
    except ApiError as e:
        if not streaming:
            raise
        # Too late for a 400 (the upload is already streaming): let upstream reject it.
        note = f"streamed upload kept unmapped model: {e.code}"
        return FormModel(old, plan._replace(original_model=requested, upstream_model=requested,
                                        notes=(*plan.notes, note)))
    if choice is not None:
        resolution = _chosen(resolution, requested, choice.model)
        plan = plan._replace(notes=(*plan.notes, *choice.notes),
                             fallback_models=() if streaming else choice.fallbacks,
                             fallback_reason=choice.passed_over)
    if resolution is None or not resolution.changed:
        return FormModel(old, plan._replace(original_model=requested, upstream_model=requested))
    return FormModel(resolution.upstream.encode(),
                     with_resolution(plan, requested, resolution.upstream, resolution))


def _observe(plan: Plan, body: ParsedBody, policy: Policy,
             available: frozenset[str] | None = None) -> Plan:
    """Going to OpenAI: what rewriting would have done, recorded, never applied."""
    try:
        mapped = _map_json(body.json_object(), plan, policy, available=available)
    except ApiError as e:
        note = f"would refuse: {e.code}"
        stream = (body.json_or_none() or {}).get("stream") is True
        refused_copy = _mirror_skip(plan, policy, stream) or note \
            if plan.decision is Decision.MIRROR else None
        return plan._replace(original_model=requested_model_of(body), stream=stream,
                       notes=(*plan.notes, note), mirror_skip=refused_copy)
    stream = body.json_object().get("stream") is True
    would = ("host", "key", *mapped.rewrites)
    plan = plan._replace(stream=stream, notes=(*plan.notes, "would rewrite: " + ",".join(would),
                                               *mapped.notes))
    if mapped.resolution is not None:
        upstream = mapped.body.get("model")
        plan = plan._replace(original_model=mapped.requested,
                       upstream_model=upstream if isinstance(upstream, str) else None)
    if plan.decision is Decision.MIRROR:
        skip: str | None = _mirror_skip(plan, policy, stream) or plan.mirror_skip
        mirror_body = None
        if skip is None:
            mirror_body = _serialise(mapped.body) if mapped.changed else body.raw
        plan = plan._replace(mirror_skip=skip, mirror_body=mirror_body)
    return plan


def _mirror_skip(plan: Plan, policy: Policy, stream: bool) -> str | None:
    if plan.decision is Decision.MIRROR and stream and not policy.rules.cutover.mirror_streaming:
        return "streaming"
    return None


# ---------------------------------------------------------------------- outcomes


def answered_from_store(plan: Plan) -> Plan:
    return plan._replace(notes=(*plan.notes, "answered from the response store"))


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one, not per call


def _serialise(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()
