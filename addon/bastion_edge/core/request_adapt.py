"""Fields Bastion takes differently from OpenAI, adapted once the model is decided. Pure.

- embeddings: token-id `input` decoded back to text with the app's model's tokenizer
  (`embedding_input`); `dimensions=` checked against the Bastion model's vector size
  (`embedding_dims`): its native size is honoured (the parameter dropped), another is 400;
- chat and responses: reasoning-only fields (`reasoning_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion_edge.config.schema import Rules
from bastion_edge.core.embedding_dims import dimensions_error
from bastion_edge.core.embedding_input import decoded_input
from bastion_edge.core.facts import CHAT, EMBEDDINGS, RESPONSES
from bastion_edge.core.reasoning_fields import adapt_reasoning_fields

REWRITE_TOKENS = "token-ids"  # token-id embeddings input decoded to text
REWRITE_FIELDS = "fields"  # reasoning-only or dimensions fields adapted


@dataclass
class Adaptation:
    rewrites: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def adapt_for_bastion(body: dict[str, Any], endpoint: str, requested: str, upstream: str,
                      rules: Rules) -> Adaptation:
    """Edits `body` in place for the Bastion model `upstream`; raises ApiError (400)."""
    done = Adaptation()
    if endpoint == EMBEDDINGS:
        text = decoded_input(body.get("input"), requested)
        if text is not None:
            body["input"] = text
            done.rewrites.append(REWRITE_TOKENS)
            done.notes.append(f"token-id input decoded with {requested}'s tokenizer")
        sizes = rules.embedding_dimensions
        error = dimensions_error(requested, upstream, body.get("dimensions"), sizes)
        if error is not None:
            raise error
        if body.get("dimensions") is not None and upstream != requested:
            del body["dimensions"]  # the native size: what the model produces anyway
            done.rewrites.append(REWRITE_FIELDS)
            done.notes.append("dimensions dropped (the model's native size)")
    elif endpoint in (CHAT, RESPONSES):
        notes = adapt_reasoning_fields(body, upstream)
        if notes:
            done.rewrites.append(REWRITE_FIELDS)
            done.notes += notes
    return done
