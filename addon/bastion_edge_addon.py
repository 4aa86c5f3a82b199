"""Entry point for a plain mitmproxy: `mitmdump -s addon/bastion_edge_addon.py`.

Settings are mitmproxy options (`--set bastion_rules=rules.yaml`,
`--set bastion_metrics_port=9090`, `--set bastion_access_log=-`,
`--set bastion_responses_store=redis://...`).
"""

from bastion_edge.hooks import BastionEdge
from bastion_edge.proxy_gate import ProxyGate
from bastion_edge.responses_state import ResponsesState

# ProxyGate first: it authenticates apps and checks egress before BastionEdge acts.
edge = BastionEdge()
addons = [ProxyGate(edge), edge, ResponsesState(edge)]
