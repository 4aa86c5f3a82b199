"""Embedding vector sizes: rules data, the check's warning and the `dimensions=` check.

An app's vector store was built with its OpenAI model's size (text-embedding-3-small:
1536); the Bastion model behind the mapping may produce another (bge-m3: 1024). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from bastion_edge.config.schema import DEFAULT_DIMENSIONS as DEFAULT_DIMENSIONS
from bastion_edge.errors import ApiError, bad_request


def dimensions_error(requested: str, upstream: str, asked: object,
                     sizes: Mapping[str, int]) -> ApiError | None:
    """The 400 for a `dimensions=` the Bastion model cannot produce, else None.

    Bastion's models produce their native size only; a request for exactly that size is
    honoured (and the parameter dropped upstream by the caller)."""
    native = sizes.get(upstream)
    if asked is None or native is None or asked == native:
        return None
    return bad_request(
        f"bastion-edge: {requested} is served by {upstream}, whose vectors have {native} "
        f"dimensions; dimensions={asked} cannot be honoured. Ask for {native} (or none), "
        f"and re-embed vectors stored at another size.", "dimensions_not_supported",
        "dimensions")


def size_change_warnings(mapping: Iterable[tuple[str, Iterable[str]]],
                         sizes: Mapping[str, int]) -> list[str]:
    """`check`'s warnings: each known embedding id whose mapped model's vectors differ
    in size. `mapping` is (pattern, Bastion ids it may use), in rules order."""
    rules = list(mapping)
    warnings: list[str] = []
    for model, size in sizes.items():
        rule = next((r for r in rules if r[0] == model), None) or next(
            (r for r in rules if fnmatchcase(model, r[0])), None)
        for target in dict.fromkeys(rule[1] if rule else ()):
            other = sizes.get(target)
            if other is not None and other != size and target != model:
                warnings.append(f"warning: {model} ({size} dimensions) -> {target} ({other} "
                                "dimensions): vectors change size; re-embed stored vectors")
    return warnings
