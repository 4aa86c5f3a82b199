"""`rules suggest`: a `models:` entry for every OpenAI id an access log saw (pure).

Each id goes to a Bastion model of its class (the migration guide's classes, as in the
shipped rules.yaml): embeddings, transcription, images, coding, cost-sensitive chat
(mini, nano, gpt-3.5, legacy completions) and general-purpose chat (the rest, reasoning
models included). What the traffic used refines it against the rules' `capabilities:`:
image input seen and a target without vision adds a `has_image` choice for the vision
model; tools or a json_schema answer seen and a target without them moves the id to
the general-purpose model.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion_edge.config.schema import ALL_SUPPORTED, ModelCapabilities, ModelRule

GENERAL, COST = "gpt-oss-120b", "gpt-oss-20b"
CODING, VISION = "Qwen3-Coder-30B-A3B-Instruct", "Qwen2.5-VL-72B-Instruct"
EMBEDDINGS, TRANSCRIPTION, IMAGES = "bge-m3", "whisper-large-v3", "FLUX.1-schnell"
CAPABILITIES = ("tools", "vision", "json_schema")

# By endpoint first (an id's use decides its class), then by family, first match wins.
BY_ENDPOINT = {"embeddings": EMBEDDINGS, "audio.transcriptions": TRANSCRIPTION,
               "audio.translations": TRANSCRIPTION, "images.generations": IMAGES,
               "images.edits": IMAGES, "images.variations": IMAGES}
FAMILIES: tuple[tuple[str, str], ...] = (
    ("text-embedding*", EMBEDDINGS), ("whisper*", TRANSCRIPTION), ("*transcribe*", TRANSCRIPTION),
    ("dall-e*", IMAGES), ("gpt-image*", IMAGES), ("*codex*", CODING),
    ("o[134]*", GENERAL),  # reasoning models, o4-mini included
    ("*-mini*", COST), ("*-nano*", COST), ("gpt-3.5*", COST), ("davinci*", COST),
    ("babbage*", COST),
)
NOT_MAPPED = frozenset({"audio.speech"})  # served by the TTS adapter by voice, not model


@dataclass
class Seen:
    """One OpenAI id in the log."""

    model: str
    exchanges: int = 0
    endpoints: Counter[str] = field(default_factory=Counter)
    capabilities: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Suggestion:
    seen: Seen
    target: str
    vision_choice: str | None  # a `has_image` choice ahead of the target
    why: str


def capabilities_of(body: Any) -> set[str]:
    """What a request body used: tools, image input (vision), a json_schema answer."""
    found: set[str] = set()
    if not isinstance(body, dict):
        return found
    if body.get("tools") or body.get("functions"):
        found.add("tools")
    formats = [body.get("response_format"), (body.get("text") or {}).get("format")
               if isinstance(body.get("text"), dict) else None]
    if any(isinstance(f, dict) and f.get("type") == "json_schema" for f in formats):
        found.add("json_schema")
    if _has_image(body.get("messages")) or _has_image(body.get("input")):
        found.add("vision")
    return found


def _has_image(value: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image"):
            return True
        return any(_has_image(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_has_image(v, depth + 1) for v in value)
    return False


def collect(records: Iterable[Mapping[str, Any]]) -> list[Seen]:
    """Ids the apps asked for (exchanges, not canary events), most used first."""
    seen: dict[str, Seen] = {}
    for r in records:
        model, endpoint = r.get("original_model"), r.get("endpoint")
        if not isinstance(model, str) or not model or "event" in r:
            continue
        entry = seen.setdefault(model, Seen(model))
        entry.exchanges += 1
        entry.endpoints[str(endpoint)] += 1
        entry.capabilities |= capabilities_of(r.get("request_body"))
    return sorted(seen.values(), key=lambda s: (-s.exchanges, s.model))


def class_of(seen: Seen) -> str:
    endpoint = seen.endpoints.most_common(1)[0][0] if seen.endpoints else ""
    if endpoint in BY_ENDPOINT:
        return BY_ENDPOINT[endpoint]
    return next((target for pattern, target in FAMILIES
                 if fnmatch.fnmatchcase(seen.model, pattern)), GENERAL)


def suggest(seen: Seen, capabilities: Mapping[str, ModelCapabilities]) -> Suggestion:
    target = class_of(seen)
    why = [f"class {target}"]
    caps = capabilities.get(target, ALL_SUPPORTED)
    for need in ("tools", "json_schema"):
        if need in seen.capabilities and not getattr(caps, need) and target != GENERAL:
            why.append(f"{need} seen, {target} lacks it")
            target, caps = GENERAL, capabilities.get(GENERAL, ALL_SUPPORTED)
    vision = None
    if "vision" in seen.capabilities and not caps.vision:
        vision = VISION
        why.append(f"images seen, {target} has no vision")
    return Suggestion(seen, target, vision, "; ".join(why))


def unmapped(seen: Sequence[Seen], rules: Sequence[ModelRule]) -> list[str]:
    """Seen ids no `models:` entry takes (exact, or a glob)."""
    exact = {r.pattern for r in rules if not r.is_glob}
    globs = [r.pattern for r in rules if r.is_glob]
    return [s.model for s in seen if not _speech_only(s) and s.model not in exact
            and not any(fnmatch.fnmatchcase(s.model, g) for g in globs)]


def _speech_only(seen: Seen) -> bool:
    return set(seen.endpoints) <= NOT_MAPPED


def render(seen: Sequence[Seen], capabilities: Mapping[str, ModelCapabilities],
           source: str) -> str:
    """The `models:` section, one entry per mapped id, its counts and what was seen."""
    total = sum(s.exchanges for s in seen)
    lines = [f"# bastion-edge rules suggest: {len(seen)} OpenAI ids in {source} "
             f"({total} exchanges)", "models:"]
    for s in seen:
        key = json.dumps(s.model)  # a YAML double-quoted scalar
        used = ", ".join(c for c in CAPABILITIES if c in s.capabilities) or "none"
        endpoints = ", ".join(e for e, _ in s.endpoints.most_common())
        comment = f"# {s.exchanges} exchanges ({endpoints}); seen: {used}"
        if _speech_only(s):
            lines.append(f"  # {key}: audio.speech is served by voice (tts.voices); {comment[2:]}")
            continue
        found = suggest(s, capabilities)
        if found.vision_choice is None:
            lines.append(f"  {key}: {found.target}  {comment}; {found.why}")
            continue
        lines += [f"  {key}:  {comment}; {found.why}",
                  "    - when: {has_image: true}", f"      use: {found.vision_choice}",
                  f"    - use: {found.target}"]
    return "\n".join(lines) + "\n"

