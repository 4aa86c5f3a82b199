"""Model ids for Bastion: the mapping decision and the `/v1/models/{id}` path.

The planner calls these for JSON bodies, form fields and paths alike; plain values in,
plain values out.
"""

from __future__ import annotations

from bastion_edge.config.schema import Rules
from bastion_edge.core.facts import RequestFacts
from bastion_edge.core.model_map import ModelMap, Resolution
from bastion_edge.errors import ApiError, bad_request


def decide_model(
    requested: str, facts: RequestFacts, rules: Rules, models: ModelMap
) -> Resolution | None:
    """The mapping for `requested`; None means forward it unchanged.

    Raises a 400 envelope for an unmapped id when the rules say `reject`.
    """
    found = models.resolve(requested, facts)
    if found is not None:
        return found
    if rules.unmapped_models == "pass_through" or models.is_bastion_model(requested):
        return None
    raise bad_request(
        f"bastion-edge: model {requested!r} has no Bastion mapping in {rules.source}. "
        "Add it under `models:` there (or set `unmapped_models: pass_through`).",
        "model_not_mapped",
        "model",
    )


def rewrite_model_path(
    path: str, facts: RequestFacts, rules: Rules, models: ModelMap
) -> tuple[str, Resolution | None]:
    """`/v1/models/{id}`: map the id in the path."""
    prefix = "/v1/models/"
    bare, sep, query = path.partition("?")
    requested = bare[len(prefix) :]
    if not bare.startswith(prefix) or not requested or "/" in requested:
        return path, None
    resolution = decide_model(requested, facts, rules, models)
    if resolution is None or not resolution.changed:
        return path, resolution
    return f"{prefix}{resolution.upstream}{sep}{query}", resolution


def model_not_string_error() -> ApiError:
    return bad_request("`model` must be a string.", "invalid_type", "model")
