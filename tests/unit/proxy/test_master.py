"""`bastion-edge run` builds its master from the mitmproxy addons it needs."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import options

from bastion_edge.proxy.master import mitmproxy_addons, proxy_master

ALWAYS = {"Core", "Block", "DisableH2C", "Proxyserver", "NextLayer", "TlsConfig", "ErrorCheck"}


def names(modes: list[str]) -> set[str]:
    return {type(addon).__name__ for addon in mitmproxy_addons(modes)}


def test_regular_and_transparent_need_only_the_core_set() -> None:
    assert names(["regular"]) == ALWAYS
    assert names(["regular", "transparent@8081"]) == ALWAYS


@pytest.mark.parametrize("mode", ["dns@5353", "wireguard", "local:curl"])
def test_modes_with_dns_get_the_resolver(mode: str) -> None:
    assert names([mode]) == ALWAYS | {"DnsResolver", "StripDnsHttpsRecords"}


def test_reverse_mode_keeps_alt_svc_rewriting() -> None:
    assert names(["reverse:https://example.com@8443"]) == ALWAYS | {"UpdateAltSvc"}


def test_the_master_declares_the_options_the_proxy_sets() -> None:
    async def build() -> None:
        opts = options.Options()
        master = proxy_master(opts, ["regular"])
        # Set by the addon and the CLI: each must be declared by a kept addon.
        opts.update(mode=["regular"], connection_strategy="lazy", http2=False,
                    allow_hosts=["^api\\.openai\\.com$"], block_global=True)
        assert master.addons.get("proxyserver") is not None
        assert master.addons.get("onboarding") is None  # mitmdump's extras are left out

    asyncio.run(build())
