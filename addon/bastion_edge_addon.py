"""Entry point for a plain mitmproxy: `mitmdump -s addon/bastion_edge_addon.py`.

Settings are mitmproxy options (`--set bastion_rules=rules.yaml`,
`--set bastion_metrics_port=9090`, `--set bastion_access_log=-`,
`--set bastion_responses_store=redis://...`).
"""

from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.proxy.connection_guard import ConnectionGuard
from bastion_edge.proxy.gate import ProxyGate
from bastion_edge.proxy.key_screen import KeyScreen
from bastion_edge.proxy.tls_advice import TlsAdvice

# ProxyGate first: it authenticates apps and checks egress before BastionEdge acts.
# Both read the shared rules snapshot, not the root.
edge = BastionEdge()
addons = [ConnectionGuard(lambda: edge.shared.rules.limits, edge.shared.metrics),
          ProxyGate(edge.shared), edge,
          TlsAdvice(edge.shared.metrics.registry),  # an app without the proxy CA: the fix, once
          KeyScreen()]  # last: key_screen.py
