"""Cutover modes: who serves a request while an app moves from OpenAI to Bastion.

  rewrite  every request goes to Bastion (the default)
  observe  everything goes to OpenAI unchanged; what would be rewritten is recorded
  split    `split_percent` of traffic goes to Bastion, sticky per app or conversation
  mirror   OpenAI serves the app; a rewritten copy goes to Bastion and is compared
  canary   as split, at the canary's current step (core.canary moves it by evidence)

Pure decisions; the hooks apply them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bastion_edge.config.schema import CutoverMode as CutoverMode
from bastion_edge.config.schema import CutoverRules as CutoverRules
from bastion_edge.config.schema import StickyBy as StickyBy

BASTION = "bastion"
OPENAI = "openai"
SPLITS = ("split", "canary")  # the modes that send each sticky key to one side


def split_bucket(sticky_key: str) -> float:
    """A stable point in [0, 100) for a key: the same key always lands the same way."""
    digest = hashlib.sha256(sticky_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def destination_for(rules: CutoverRules, sticky_key: str, canary_percent: float = 0.0) -> str:
    """Where a request goes under these rules (split and canary use the sticky key; a
    canary's percent is its current step, from the canary store)."""
    if rules.mode == "rewrite":
        return BASTION
    if rules.mode in ("observe", "mirror"):
        return OPENAI
    percent = canary_percent if rules.mode == "canary" else rules.split_percent
    return BASTION if split_bucket(sticky_key) < percent else OPENAI


def conversation_key(body: Mapping[str, Any]) -> str | None:
    """What stays the same across a conversation's turns: its opening messages.

    Chat apps resend the whole history every turn, so the system prompt and first user
    message identify the conversation. (The hooks keep Responses requests sticky per
    app: a turn chained by `previous_response_id` must reach the provider that holds
    the previous response.)
    """
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        opening = []
        for message in messages:
            opening.append(message)
            if isinstance(message, dict) and message.get("role") == "user":
                break
        return _digest(opening)
    items = body.get("input")
    if isinstance(items, str):
        return _digest(items)
    if isinstance(items, list) and items and "previous_response_id" not in body:
        return _digest(items[0])
    return None


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
