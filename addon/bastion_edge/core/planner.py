"""The planner: a request's head, then its body, plus one rules snapshot -> one plan.

    plan = plan_head(head, policy, environ)        # before the body: route, key, streaming
    plan = plan_body(plan, ParsedBody(raw), policy, history)   # model, store, chain, bytes

Both are pure (no mitmproxy, no I/O) and never raise for a bad request: a refusal is a
plan whose `refusal` is the envelope to answer. The head step already points every
OpenAI-bound request at Bastion without the app's credentials (fail closed); only a
split by conversation waits for the body to choose between Bastion and OpenAI.

To add a rule condition: a field on `RequestFacts` and a test in `Condition.matches`.
To add an endpoint: its path in `core/facts.py`, then its body step here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bastion_edge.config.rules import Rules
from bastion_edge.core.cutover import OPENAI, CutoverRules, conversation_key, destination_for
from bastion_edge.core.facts import (
    BATCHES,
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    FILES,
    IMAGES_GENERATIONS,
    MODELS,
    RESPONSES,
    SPEECH,
    RequestFacts,
    classify_endpoint,
    facts_from_json,
    is_collection_path,
    key_sha256,
)
from bastion_edge.core.item_refs import referenced_ids, resolve_references
from bastion_edge.core.keys import KeyChoice, KeyFileReader, select_key
from bastion_edge.core.limits import head_violation, path_violation
from bastion_edge.core.model_choice import choose_model
from bastion_edge.core.model_map import ModelMap, Resolution
from bastion_edge.core.plan import (
    REWRITE_HOST,
    REWRITE_HTTPS,
    REWRITE_KEY,
    REWRITE_MODEL,
    REWRITE_STORE,
    REWRITE_TTS,
    BatchAction,
    BodyStep,
    Decision,
    Destination,
    Plan,
    Route,
    StoreAction,
)
from bastion_edge.core.request import ParsedBody, RequestHead, requested_model_of
from bastion_edge.core.request_adapt import adapt_for_bastion
from bastion_edge.core.responses import (
    ANONYMOUS,
    History,
    Item,
    expand_request,
    input_as_items,
    turn_from_request,
)
from bastion_edge.core.rewrite import decide_model, model_not_string_error, rewrite_model_path
from bastion_edge.core.routing import HostKind, Target, bastion_target, classify_host
from bastion_edge.core.usage import STREAM_USAGE_NOTE, adds_stream_usage, with_stream_usage
from bastion_edge.errors import ApiError, bad_request
from bastion_edge.streams.form_checks import form_field_error
from bastion_edge.streams.multipart import boundary_from_content_type, replace_form_field

JSON_ENDPOINTS = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, IMAGES_GENERATIONS, RESPONSES})
# Multipart uploads larger than this are streamed through, not buffered.
STREAM_UPLOADS_OVER = 1024 * 1024
# The app's own credentials: never sent to Bastion, only ever back to OpenAI.
APP_CREDENTIAL_HEADERS = ("authorization", "openai-organization", "openai-project")
# OpenAI's default when images.generations omits `model`; Bastion requires one.
IMAGES_DEFAULT_MODEL = "dall-e-2"


@dataclass(frozen=True, slots=True)
class Policy:
    """One rules snapshot and what is derived from it; swapped whole on reload."""

    rules: Rules
    models: ModelMap

    @classmethod
    def of(cls, rules: Rules) -> Policy:
        return cls(rules, ModelMap(rules))


# ---------------------------------------------------------------------- head step


def plan_head(head: RequestHead, policy: Policy, environ: Mapping[str, str],
              files: KeyFileReader | None = None, app_key_sha256: str | None = None,
              ) -> Plan | None:
    """The plan before the body arrives; None for traffic that is not ours.

    Keys come from `environ` and, for `keys.default_file` / `bastion_key_file`, `files`.
    `app_key_sha256` stands in for an app key the head does not carry (a batch line runs
    with its creator's key hash, never the key itself).
    """
    rules = policy.rules
    kind = classify_host(rules, head.host)
    if kind is None:
        return None
    endpoint = classify_endpoint(head.path)
    https = (REWRITE_HTTPS,) if head.scheme == "http" else ()
    target = bastion_target(rules.upstream, kind, head.path)
    violation = head_violation(head.header_fields, rules.limits) or path_violation(
        head.path, api_only=kind is HostKind.OPENAI)
    if kind is HostKind.BASTION:
        passthrough = Plan(kind=kind, endpoint=endpoint, method=head.method,
                           path=head.bare_path, decision=Decision.PASSTHROUGH,
                           route=Route(Destination.BASTION, target),
                           facts=RequestFacts(endpoint), rewrites=https)
        return passthrough if violation is None else refused(passthrough, violation)
    credentials = {name: head.headers[name]
                   for name in APP_CREDENTIAL_HEADERS if name in head.headers}
    facts = RequestFacts(endpoint=endpoint, headers=head.headers,
                         app_key_sha256=key_sha256(credentials.get("authorization"))
                         or app_key_sha256,
                         client_ip=head.client, app=head.app)
    hold = Route(Destination.BASTION, target, drop_headers=tuple(credentials))
    plan = Plan(kind=kind, endpoint=endpoint, method=head.method, path=head.bare_path,
                decision=Decision(rules.cutover.mode), route=hold, facts=facts,
                body_step=_body_step(head, endpoint), rewrites=(*https, REWRITE_HOST),
                partition=partition_of(facts), app_credentials=credentials)
    if violation is not None:  # never forwarded, never given a key
        return refused(plan, violation)
    try:
        return _plan_openai_head(plan, head, policy, environ, files)
    except ApiError as e:
        return refused(plan, e)


def _body_step(head: RequestHead, endpoint: str) -> BodyStep:
    content_type = head.headers.get("content-type", "")
    boundary = boundary_from_content_type(content_type)
    if boundary is not None:
        length = head.headers.get("content-length")
        small = length is not None and length.isdigit() and int(length) <= STREAM_UPLOADS_OVER
        if small or head.http_version not in ("HTTP/1.1", "HTTP/1.0"):
            return BodyStep.FORM
        return BodyStep.STREAMED_FORM
    if (endpoint in JSON_ENDPOINTS and head.method == "POST" and is_collection_path(head.path)
            and "multipart" not in content_type):
        return BodyStep.JSON
    return BodyStep.NONE


def partition_of(facts: RequestFacts) -> str:
    """Whose Responses state a request may see: its app, else its key, else its address
    (keyless clients never share one partition)."""
    if facts.app:
        return f"app:{facts.app}"
    if facts.app_key_sha256:
        return facts.app_key_sha256
    return f"client:{facts.client_ip}" if facts.client_ip else ANONYMOUS


def sticky_key(facts: RequestFacts) -> str:
    """What keeps one app on one side of a split: its name, key or address."""
    return facts.app or facts.app_key_sha256 or facts.client_ip or ""


def _plan_openai_head(
    plan: Plan, head: RequestHead, policy: Policy, environ: Mapping[str, str],
    files: KeyFileReader | None,
) -> Plan:
    rules = policy.rules
    cutover = rules.cutover
    by_conversation = cutover.mode == "split" and cutover.sticky_by == "conversation"
    if cutover.mode != "rewrite":
        if by_conversation:
            if plan.body_step is BodyStep.JSON and plan.endpoint != RESPONSES:
                key = select_key(rules, plan.facts, environ, files)
                return plan._replace(key=key, body_step=BodyStep.CONVERSATION)
            if plan.body_step is not BodyStep.STREAMED_FORM and _goes_to_openai(plan, cutover):
                return to_openai(plan, head.query, rules, environ, files)
        elif _goes_to_openai(plan, cutover):
            return to_openai(plan, head.query, rules, environ, files)
    key = select_key(rules, plan.facts, environ, files)
    return _to_bastion(plan, head, policy, key)


def _goes_to_openai(plan: Plan, cutover: CutoverRules) -> bool:
    """Sticky per app."""
    return destination_for(cutover, sticky_key(plan.facts)) == OPENAI


def _to_bastion(plan: Plan, head: RequestHead, policy: Policy, key: KeyChoice) -> Plan:
    """Bastion with its key; audio.speech via the TTS adapter; stored Responses from the
    store; a model id in the path mapped."""
    hold = plan.route
    if plan.endpoint == SPEECH and head.method == "POST":
        return plan._replace(key=key, route=Route(Destination.TTS, hold.target,
                                                    drop_headers=hold.drop_headers),
                       rewrites=(*plan.rewrites, REWRITE_TTS), body_step=BodyStep.NONE)
    bastion = Route(Destination.BASTION, hold.target, {"authorization": f"Bearer {key.key}"},
                    hold.drop_headers)
    plan = plan._replace(key=key, route=bastion, rewrites=(*plan.rewrites, REWRITE_KEY))
    if plan.endpoint == RESPONSES and not is_collection_path(head.path):
        return _store_action(plan, head)
    if plan.endpoint in (FILES, BATCHES):
        return _batch_action(plan, head)
    if plan.endpoint == MODELS and head.method == "GET":
        return _model_path(plan, head, policy)
    return plan


def _store_action(plan: Plan, head: RequestHead) -> Plan:
    """GET/DELETE /v1/responses/{id} and GET .../input_items: Bastion keeps no state."""
    parts = head.bare_path.rstrip("/").split("/")
    if len(parts) not in (4, 5) or parts[:3] != ["", "v1", "responses"]:
        return plan
    response_id, sub = parts[3], parts[4] if len(parts) == 5 else None
    action = None
    if sub is None and head.method == "GET":
        if dict(parse_qsl(head.query)).get("stream", "").lower() == "true":
            raise bad_request("bastion-edge does not replay stored responses as a stream; "
                              "retrieve without stream=true.", "unsupported_parameter",
                              "stream")
        action = StoreAction.RETRIEVE
    elif sub is None and head.method == "DELETE":
        action = StoreAction.DELETE
    elif sub == "input_items" and head.method == "GET":
        action = StoreAction.INPUT_ITEMS
    if action is None:
        return plan  # e.g. POST .../cancel: upstream answers
    return plan._replace(store_action=action, response_id=response_id,
                   route=Route(Destination.PROXY, plan.route.target,
                               drop_headers=plan.route.drop_headers))


_BATCH_ACTIONS = {
    ("files", None, None, "POST"): BatchAction.FILE_CREATE,
    ("files", None, None, "GET"): BatchAction.FILE_LIST,
    ("files", "id", None, "GET"): BatchAction.FILE_RETRIEVE,
    ("files", "id", None, "DELETE"): BatchAction.FILE_DELETE,
    ("files", "id", "content", "GET"): BatchAction.FILE_CONTENT,
    ("batches", None, None, "POST"): BatchAction.BATCH_CREATE,
    ("batches", None, None, "GET"): BatchAction.BATCH_LIST,
    ("batches", "id", None, "GET"): BatchAction.BATCH_RETRIEVE,
    ("batches", "id", "cancel", "POST"): BatchAction.BATCH_CANCEL,
}


def _batch_action(plan: Plan, head: RequestHead) -> Plan:
    """/v1/files and /v1/batches: Bastion has neither, the proxy's batch server answers.

    Nothing of the app's goes upstream; the app's partition travels with the plan."""
    parts = head.bare_path.rstrip("/").split("/")[2:]  # ["files", id?, sub?]
    resource = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    action = _BATCH_ACTIONS.get((parts[0], "id" if resource else None, sub, head.method)) \
        if len(parts) <= 3 else None
    if action is None:
        raise ApiError(404, f"Invalid URL ({head.method} {head.bare_path})", "unknown_url")
    return plan._replace(batch_action=action, resource_id=resource, body_step=BodyStep.NONE,
                         route=Route(Destination.BATCH, plan.route.target,
                                     drop_headers=plan.route.drop_headers),
                         rewrites=tuple(r for r in plan.rewrites if r != REWRITE_KEY))


def _model_path(plan: Plan, head: RequestHead, policy: Policy) -> Plan:
    """`GET /v1/models/{id}`: the id mapped, the path placed under the base URL."""
    original, resolution = rewrite_model_path(head.path, plan.facts, policy.rules,
                                              policy.models)
    if resolution is None:
        return plan
    target = bastion_target(policy.rules.upstream, HostKind.OPENAI, original)
    plan = _with_resolution(plan, resolution.requested, resolution.upstream, resolution)
    return plan._replace(route=plan.route._replace(target=target))


def to_openai(plan: Plan, query: str, rules: Rules, environ: Mapping[str, str],
              files: KeyFileReader | None = None) -> Plan:
    """Unchanged (but over https) to OpenAI, with the app's own credentials."""
    base = urlsplit(rules.cutover.openai_base_url)
    path = plan.path + (f"?{query}" if query else "")
    target = Target("https", base.hostname or "api.openai.com", base.port or 443, path)
    route = Route(Destination.OPENAI, target, put_headers=dict(plan.app_credentials),
                  drop_headers=("authorization",))
    key, skip = None, None
    step = BodyStep.OBSERVE if plan.body_step in (BodyStep.JSON, BodyStep.CONVERSATION) \
        else BodyStep.NONE
    if plan.decision is Decision.MIRROR:
        skip = None if step is BodyStep.OBSERVE else "not mirrored endpoint"
        try:  # the key of the copy mirrored to Bastion
            key = select_key(rules, plan.facts, environ, files)
        except ApiError as e:
            skip = skip or e.code
    mirror_target = plan.route.target if plan.decision is Decision.MIRROR else None
    return plan._replace(route=route, key=key, body_step=step, mirror_skip=skip,
                         mirror_target=mirror_target,
                         rewrites=tuple(r for r in plan.rewrites if r == REWRITE_HTTPS))


# ---------------------------------------------------------------------- body step


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
) -> Plan:
    """The plan once the body is known (a streamed body keeps its head plan).

    `history` is the stored conversation of a `previous_response_id`; `referenced` the
    stored items that `references_wanted` named; `available` the Bastion models listed
    now (a snapshot of the live list; None: not read yet, every model counts as listed).
    """
    if plan.refusal is not None:
        return plan
    try:
        if plan.body_step is BodyStep.CONVERSATION:
            plan = _split_by_conversation(plan, body, policy, environ, files)
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
    files: KeyFileReader | None,
) -> Plan:
    parsed = body.json_or_none()
    key = conversation_key(parsed) if parsed is not None else None
    sticky = key or sticky_key(plan.facts)
    cutover = policy.rules.cutover
    if destination_for(cutover, sticky) == OPENAI:
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
    if strip_usage:  # the app's stream stays as it was (streams/usage_stream.py)
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
                     _with_resolution(plan, requested, resolution.upstream, resolution))


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


def refused(plan: Plan, error: ApiError, requested_model: str | None = None) -> Plan:
    """The proxy answers `error`; the route stays the fail-closed hold."""
    hold = Route(Destination.BASTION, plan.route.target, drop_headers=plan.route.drop_headers)
    return plan._replace(refusal=error, route=hold,
                   original_model=plan.original_model or requested_model)


def answered_from_store(plan: Plan) -> Plan:
    return plan._replace(notes=(*plan.notes, "answered from the response store"))


def _with_resolution(plan: Plan, requested: str, upstream: str,
                     resolution: Resolution | None) -> Plan:
    rewrites = plan.rewrites
    if requested != upstream and REWRITE_MODEL not in rewrites:
        rewrites = (*rewrites, REWRITE_MODEL)
    return plan._replace(original_model=requested, upstream_model=upstream,
                   resolution=resolution if resolution is not None else plan.resolution,
                   rewrites=rewrites)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one, not per call


def _serialise(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()
