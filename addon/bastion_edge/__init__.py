"""bastion-edge: zero-code OpenAI -> Bastion migration at the network edge.

Layers (see docs/development/architecture.md): `core` decides (pure, one plan per
request), `config` loads the rules, `streams` and `state` hold codecs and Responses
state, `proxy` applies plans to mitmproxy flows, `telemetry` reports, `tts` speaks
Riva, `deploy` runs next to apps, `cli` is the command. Only `proxy` and `cli` import
mitmproxy.
"""

__version__ = "0.1.0"
