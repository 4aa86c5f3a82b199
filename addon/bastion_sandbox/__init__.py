"""The sandbox: a strict local stand-in for Bastion (OpenAI-compatible API + Riva TTS).

Used by the tests, `make demo`, the benchmark and users rehearsing a migration offline.
It shares no code with the proxy (its behaviour comes from Bastion's contract, so a
proxy bug is not mirrored here). It accepts only Bastion model ids, rejects OpenAI
keys (`sk-...`), enforces Bastion's `store: false` rule on /v1/responses, has no
/v1/audio/speech, serves Riva TTS, records what it received (`GET /sandbox/journal`)
and injects faults on request (`x-sandbox-fault`). Start it with `start_sandbox`
(async), `run_sandbox` (blocking) or `SandboxThread` (background thread).
"""

from bastion_sandbox.config import RIVA_AUDIO_MODES, ModelSupport, RivaAudioMode, SandboxConfig
from bastion_sandbox.faults import FAULT_HEADER, TOKEN_DELAY_HEADER, FaultPlan, parse_faults
from bastion_sandbox.journal import Journal, JournalEntry
from bastion_sandbox.models import MODELS, BastionModel, ModelKind
from bastion_sandbox.riva import RIVA_AUDIO_HEADER, VOICES
from bastion_sandbox.server import (
    RunningSandbox,
    SandboxThread,
    banner,
    run_sandbox,
    start_sandbox,
)
from bastion_sandbox.ssml import CHARS_PER_SECOND, speech_seconds
from bastion_sandbox.tls import SandboxTls, ensure_tls

__all__ = [
    "CHARS_PER_SECOND",
    "FAULT_HEADER",
    "MODELS",
    "RIVA_AUDIO_HEADER",
    "RIVA_AUDIO_MODES",
    "TOKEN_DELAY_HEADER",
    "VOICES",
    "BastionModel",
    "FaultPlan",
    "Journal",
    "JournalEntry",
    "ModelKind",
    "ModelSupport",
    "RivaAudioMode",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxThread",
    "SandboxTls",
    "banner",
    "ensure_tls",
    "parse_faults",
    "run_sandbox",
    "speech_seconds",
    "start_sandbox",
]
