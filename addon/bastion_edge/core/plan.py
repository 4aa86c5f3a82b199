"""One request's plan: where it goes, with which key and body, and why. Immutable data.

The planner (`planner.py`) makes it; the proxy applies it to the flow and meters the
exchange. Printing `plan.explain()` answers "why did this request go there?".
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from bastion_edge.core.facts import RequestFacts
from bastion_edge.core.keys import KeyChoice
from bastion_edge.core.model_map import Resolution
from bastion_edge.core.responses_request import ANONYMOUS, TurnRequest
from bastion_edge.core.routing import HostKind, Target
from bastion_edge.errors import ApiError


class Destination(StrEnum):
    """Who serves the request."""

    BASTION = "bastion"  # Bastion's API: the rewritten request, or Bastion traffic already
    OPENAI = "openai"  # OpenAI itself, as the app sent it (observe, mirror, split)
    TTS = "tts"  # the in-process Riva adapter (`audio.speech`), which calls Bastion
    PROXY = "proxy"  # the proxy answers: a refusal, or the Responses store
    BATCH = "batch"  # the in-process Files/Batch API server (batch/server.py) answers

    @property
    def provider(self) -> str:
        """The provider that serves it, as metrics and the access log name it."""
        if self is Destination.BATCH:
            return "proxy"
        return "bastion" if self is Destination.TTS else self.value


class Decision(StrEnum):
    """Why the request goes where it goes: the cutover mode, or passthrough."""

    REWRITE = "rewrite"
    PASSTHROUGH = "passthrough"  # already Bastion traffic: only forced onto https
    OBSERVE = "observe"
    MIRROR = "mirror"
    SPLIT = "split"
    CANARY = "canary"  # split at the canary's current step (core/canary.py moves it)


class BodyStep(StrEnum):
    """What the body step does with the body."""

    NONE = "none"  # forward the body as it is
    JSON = "json"  # a JSON create: model, store flag, Responses chain
    FORM = "form"  # a buffered multipart form: the `model` field
    STREAMED_FORM = "streamed_form"  # a large form: `model` replaced as it streams through
    OBSERVE = "observe"  # going to OpenAI: record what rewriting would have done
    CONVERSATION = "conversation"  # split by conversation: the body decides the route


class StoreAction(StrEnum):
    """Responses sub-resources the proxy answers from its store."""

    RETRIEVE = "retrieve"
    DELETE = "delete"
    INPUT_ITEMS = "input_items"


class BatchAction(StrEnum):
    """Files and Batch API operations the proxy answers (Bastion has neither API)."""

    FILE_CREATE = "file_create"
    FILE_LIST = "file_list"
    FILE_RETRIEVE = "file_retrieve"
    FILE_CONTENT = "file_content"
    FILE_DELETE = "file_delete"
    BATCH_CREATE = "batch_create"
    BATCH_LIST = "batch_list"
    BATCH_RETRIEVE = "batch_retrieve"
    BATCH_CANCEL = "batch_cancel"


NO_HEADERS: Mapping[str, str] = MappingProxyType({})

# Rewrite kinds, as counted in metrics and listed in the access log.
REWRITE_HTTPS = "https-upgrade"
REWRITE_HOST = "host"
REWRITE_KEY = "key"
REWRITE_MODEL = "model"
REWRITE_STORE = "store"
REWRITE_TTS = "tts"


class Route(NamedTuple):
    """Where the flow is pointed and which headers change on the way."""

    destination: Destination
    target: Target  # for TTS and proxy answers: Bastion's, on whose behalf they act
    put_headers: Mapping[str, str] = NO_HEADERS  # may hold the Bastion key: never in repr
    drop_headers: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"Route({self.destination.value}, {self.target.url}, "
                f"put={sorted(self.put_headers)}, drop={list(self.drop_headers)})")


class Plan(NamedTuple):
    """Immutable: a tuple, cheap to copy, which the hot path does twice.

    Changed with `plan._replace(field=value, ...)` (the public copy-with-changes method
    of every NamedTuple; the underscore only keeps it apart from field names). mypy
    checks each keyword against the fields below, name and type, so a misspelt or
    mistyped change fails `make lint` instead of silently adding nothing.
    """

    kind: HostKind
    endpoint: str
    method: str
    path: str  # without the query string, as the app sent it
    decision: Decision
    route: Route
    facts: RequestFacts
    body_step: BodyStep = BodyStep.NONE
    rewrites: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    refusal: ApiError | None = None  # answered by the proxy; nothing goes upstream
    key: KeyChoice | None = None  # the Bastion key (TTS jobs, mirrored copies)
    resolution: Resolution | None = None
    original_model: str | None = None
    upstream_model: str | None = None
    stream: bool = False  # the app asked for a streamed reply
    app_store: bool | None = None  # the Responses `store` flag as the app sent it
    body: bytes | None = None  # the new body; None: unchanged (never in repr)
    partition: str = ANONYMOUS  # whose Responses state this request may see
    store_action: StoreAction | None = None
    response_id: str | None = None  # the stored response a store action is about
    capture: TurnRequest | None = None  # keep the reply's record (Responses)
    mirror_body: bytes | None = None  # what Bastion gets, mirrored (never in repr)
    mirror_skip: str | None = None  # why no copy is mirrored to Bastion
    app_credentials: Mapping[str, str] = NO_HEADERS  # only ever for OpenAI (never in repr)
    mirror_target: Target | None = None  # where the mirrored copy goes (Bastion)
    fallback_models: tuple[str, ...] = ()  # tried in order when Bastion answers 404 model_not_found
    fallback_reason: tuple[str, str] | None = None  # (the target passed over, why)
    batch_action: BatchAction | None = None  # a Files/Batch API call the proxy answers
    resource_id: str | None = None  # the file or batch a batch action is about
    strip_usage: bool = False  # include_usage added upstream: keep its chunk from the app

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields
                          if name not in _UNSHOWN)
        return f"Plan({shown})"

    @property
    def destination(self) -> Destination:
        return Destination.PROXY if self.refusal is not None else self.route.destination

    @property
    def decision_label(self) -> str:
        return "refused" if self.refusal is not None else self.decision.value

    @property
    def upstream_host(self) -> str | None:
        return self.route.target.host_header

    def explain(self) -> dict[str, object]:
        """The plan as plain data for a person: no key, no credential, no body."""
        return {
            "endpoint": self.endpoint,
            "destination": self.destination.value,
            "decision": self.decision_label,
            "target": self.route.target.url,
            "key_env": self.key.env if self.key is not None else None,
            "rewrites": list(self.rewrites),
            "model": [self.original_model, self.upstream_model],
            "body_step": self.body_step.value,
            "store_action": self.store_action.value if self.store_action else None,
            "batch_action": self.batch_action.value if self.batch_action else None,
            "refusal": self.refusal.code if self.refusal is not None else None,
            "notes": list(self.notes),
        }



_UNSHOWN = frozenset({"body", "mirror_body", "app_credentials", "capture"})
