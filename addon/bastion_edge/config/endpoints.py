"""The endpoint names rules may name (`when: {endpoint: ...}`), as the OpenAI SDKs call them.

Data of the rules schema; `core.facts` classifies request paths into these names.
"""

from __future__ import annotations

CHAT = "chat.completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
IMAGES_GENERATIONS = "images.generations"
IMAGES_EDITS = "images.edits"
IMAGES_VARIATIONS = "images.variations"
TRANSCRIPTIONS = "audio.transcriptions"
TRANSLATIONS = "audio.translations"
SPEECH = "audio.speech"
RESPONSES = "responses"
MODELS = "models"
FILES = "files"  # answered by the proxy (batch/): Bastion has no Files API
BATCHES = "batches"  # answered by the proxy (batch/): Bastion has no Batch API
OTHER = "other"

ENDPOINTS = (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    IMAGES_GENERATIONS,
    IMAGES_EDITS,
    IMAGES_VARIATIONS,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    SPEECH,
    RESPONSES,
    MODELS,
    FILES,
    BATCHES,
    OTHER,
)
