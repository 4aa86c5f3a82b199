"""The planner's head step: a request's head and one rules snapshot -> its first plan.

Before the body arrives it decides the route (Bastion, OpenAI in a cutover mode, the TTS
adapter, the proxy's own store or batch server) and the key, and points every
OpenAI-bound request at Bastion without the app's credentials (fail closed). The body
step (`planner.py`) continues from this plan; `planner` re-exports what callers use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from bastion_edge.config.rules import Rules
from bastion_edge.core.cutover import OPENAI, SPLITS, CutoverRules, destination_for
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
    is_collection_path,
    key_sha256,
)
from bastion_edge.core.keys import KeyChoice, KeyFileReader, select_key
from bastion_edge.core.limits import head_violation, path_violation
from bastion_edge.core.model_map import ModelMap, Resolution
from bastion_edge.core.plan import (
    REWRITE_HOST,
    REWRITE_HTTPS,
    REWRITE_KEY,
    REWRITE_MODEL,
    REWRITE_TTS,
    BatchAction,
    BodyStep,
    Decision,
    Destination,
    Plan,
    Route,
    StoreAction,
)
from bastion_edge.core.request import RequestHead
from bastion_edge.core.responses_request import (
    ANONYMOUS,
)
from bastion_edge.core.rewrite import rewrite_model_path
from bastion_edge.core.routing import HostKind, Target, bastion_target, classify_host
from bastion_edge.errors import ApiError, bad_request
from bastion_edge.streams.multipart import boundary_from_content_type

JSON_ENDPOINTS = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, IMAGES_GENERATIONS, RESPONSES})
# Multipart uploads larger than this are streamed through, not buffered.
STREAM_UPLOADS_OVER = 1024 * 1024
# The app's own credentials: never sent to Bastion, only ever back to OpenAI.
APP_CREDENTIAL_HEADERS = ("authorization", "openai-organization", "openai-project")


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
              canary_percent: float = 0.0) -> Plan | None:
    """The plan before the body arrives; None for traffic that is not ours.

    Keys come from `environ` and, for `keys.default_file` / `bastion_key_file`, `files`.
    `app_key_sha256` stands in for an app key the head does not carry (a batch line runs
    with its creator's key hash, never the key itself). `canary_percent` is Bastion's share
    under `cutover.mode: canary` (the canary's cached step; 0, the default, sends all to
    OpenAI).
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
        return _plan_openai_head(plan, head, policy, environ, files, canary_percent)
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
    files: KeyFileReader | None, canary_percent: float,
) -> Plan:
    rules = policy.rules
    cutover = rules.cutover
    by_conversation = cutover.mode in SPLITS and cutover.sticky_by == "conversation"
    if cutover.mode != "rewrite":
        if by_conversation:
            if plan.body_step is BodyStep.JSON and plan.endpoint != RESPONSES:
                key = select_key(rules, plan.facts, environ, files)
                return plan._replace(key=key, body_step=BodyStep.CONVERSATION)
            if (plan.body_step is not BodyStep.STREAMED_FORM
                    and _goes_to_openai(plan, cutover, canary_percent)):
                return to_openai(plan, head.query, rules, environ, files)
        elif _goes_to_openai(plan, cutover, canary_percent):
            return to_openai(plan, head.query, rules, environ, files)
    key = select_key(rules, plan.facts, environ, files)
    return _to_bastion(plan, head, policy, key)


def _goes_to_openai(plan: Plan, cutover: CutoverRules, canary_percent: float) -> bool:
    """Sticky per app."""
    return destination_for(cutover, sticky_key(plan.facts), canary_percent) == OPENAI


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
    plan = with_resolution(plan, resolution.requested, resolution.upstream, resolution)
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


# ---------------------------------------------------------------------- outcomes (both steps)


def refused(plan: Plan, error: ApiError, requested_model: str | None = None) -> Plan:
    """The proxy answers `error`; the route stays the fail-closed hold."""
    hold = Route(Destination.BASTION, plan.route.target, drop_headers=plan.route.drop_headers)
    return plan._replace(refusal=error, route=hold,
                   original_model=plan.original_model or requested_model)


def with_resolution(plan: Plan, requested: str, upstream: str,
                     resolution: Resolution | None) -> Plan:
    rewrites = plan.rewrites
    if requested != upstream and REWRITE_MODEL not in rewrites:
        rewrites = (*rewrites, REWRITE_MODEL)
    return plan._replace(original_model=requested, upstream_model=upstream,
                   resolution=resolution if resolution is not None else plan.resolution,
                   rewrites=rewrites)
