"""bastion-edge: zero-code OpenAI -> Bastion migration at the network edge.

The package is split into a pure core (rules, model mapping, body rewriting, SSE,
multipart, TTS translation) and a thin mitmproxy edge (`hooks`). Only `hooks`,
`gateway_errors` and `cli` import mitmproxy.
"""

__version__ = "0.1.0"
