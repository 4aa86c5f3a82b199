"""The mitmproxy master behind `bastion-edge run`: only the mitmproxy addons it uses.

mitmproxy hands every hook, and an `update` event after each flow hook, to every addon
in its chain, whether the addon handles it or not. With mitmdump's 34 default addons
that dispatch alone is a large share of the proxy's CPU time per request (see
`bench/`). A sidecar that only rewrites OpenAI traffic needs none of map-local,
replay, sticky cookies, the onboarding app and the like, so `run` builds a master with
the addons below. `bastion-edge run --web` keeps mitmweb's full set, and
`mitmdump -s addon/bastion_edge_addon.py` gives the same addon with every mitmproxy
feature.
"""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    dns_resolver,
    errorcheck,
    next_layer,
    proxyserver,
    strip_dns_https_records,
    tlsconfig,
    update_alt_svc,
)

# Modes whose traffic includes DNS (resolved by mitmproxy itself).
DNS_MODES = ("dns", "wireguard", "local")


def mitmproxy_addons(modes: Sequence[str]) -> list[object]:
    """The mitmproxy addons the proxy needs for these modes."""
    addons: list[object] = [
        core.Core(),                      # options and commands
        block.Block(),                    # refuses clients from public addresses by default
        disable_h2c.DisableH2C(),         # strips h2c upgrades mitmproxy cannot follow
        proxyserver.Proxyserver(),  # the listeners
        next_layer.NextLayer(),           # protocol detection, allow_hosts
        tlsconfig.TlsConfig(),            # the CA, upstream verification
        errorcheck.ErrorCheck(),          # errors logged during startup: exit 1
    ]
    names = [mode.split(":", 1)[0].split("@", 1)[0] for mode in modes]
    if any(name in DNS_MODES for name in names):
        addons += [dns_resolver.DnsResolver(), strip_dns_https_records.StripDnsHttpsRecords()]
    if "reverse" in names:
        addons.append(update_alt_svc.UpdateAltSvc())
    return addons


def proxy_master(opts: options.Options, modes: Sequence[str]) -> master.Master:
    proxy = master.Master(opts, with_termlog=True)
    proxy.addons.add(*mitmproxy_addons(modes))
    return proxy
