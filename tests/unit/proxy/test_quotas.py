"""The quota child addon: it opens the store only while some app has a quota, follows
reloads, admits batch lines by their creator's quota, and puts OpenAI's headers on
replies in place of Bastion's."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons

from bastion_edge.config.rules import parse_rules
from bastion_edge.core.plan import Destination
from bastion_edge.core.quota import Admitted, Rejected
from bastion_edge.core.quota import Usage as QuotaUsage
from bastion_edge.proxy.addon import BastionEdge
from bastion_edge.proxy.quotas import QuotaKeeper, put_rate_limit_headers

DIGEST = hashlib.sha256(b"s").hexdigest()


def rules_text(quota: str) -> str:
    return f"""
clients:
  apps:
    - {{name: billing, secret_sha256: "{DIGEST}", quota: {quota}}}
    - {{name: free, secret_sha256: "{DIGEST}"}}
"""


def keeper_in(tmp: Path, quota: str) -> tuple[BastionEdge, QuotaKeeper]:
    edge = BastionEdge({})
    rules = tmp / "rules.yaml"
    rules.write_text(rules_text(quota))
    return edge, edge.quotas


def test_the_store_opens_only_with_a_quota_and_follows_reloads(tmp_path: Path) -> None:
    async def scenario() -> None:
        edge, keeper = keeper_in(tmp_path, "{}")
        with taddons.context(proxyserver.Proxyserver(), edge) as tctx:
            tctx.configure(edge, confdir=str(tmp_path), bastion_rules=str(tmp_path / "rules.yaml"))
            assert keeper.guard is None and not (tmp_path / "quotas.sqlite3").exists()
            assert keeper.quota_of("billing") is None
            edge.rules_source._reloaded(parse_rules(rules_text("{requests_per_minute: 1}")))
            assert keeper.guard is not None and (tmp_path / "quotas.sqlite3").exists()
            quota = keeper.quota_of("billing")
            assert quota is not None and quota.requests_per_minute == 1
            assert keeper.quota_of("free") is None and keeper.quota_of(None) is None
            assert isinstance(await keeper.admit("billing", quota, 0), Admitted)
            assert isinstance(await keeper.admit("billing", quota, 0), Rejected)
            await keeper.done()

    asyncio.run(scenario())


def test_a_batch_line_that_can_never_fit_is_refused_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        edge, keeper = keeper_in(tmp_path, "{tokens_per_minute: 10}")
        with taddons.context(proxyserver.Proxyserver(), edge) as tctx:
            tctx.configure(edge, confdir=str(tmp_path), bastion_rules=str(tmp_path / "rules.yaml"))
            plan = type("P", (), {})()
            plan.route = type("R", (), {"destination": Destination.BASTION})()
            plan.facts = type("F", (), {"prompt_tokens": 3})()
            body = json.dumps({"model": "m", "max_tokens": 50}).encode()
            error, verdict = await keeper.admit_line("billing", plan, body,  # type: ignore[arg-type]
                                                     give_up_at=1e12)
            assert error is not None and error.status == 429 and verdict.retry_after is None
            small = json.dumps({"model": "m", "max_tokens": 2}).encode()
            error, verdict = await keeper.admit_line("billing", plan, small,  # type: ignore[arg-type]
                                                     give_up_at=1e12)
            assert error is None and verdict.estimate == 5
            assert await keeper.admit_line("free", plan, small, 1e12) == (None, None)  # type: ignore[arg-type]
            keeper.settle_line("billing", verdict, {"usage": {"prompt_tokens": 3,
                                                              "completion_tokens": 1}}, 200)
            assert keeper.guard is not None and keeper.guard.pending == 1  # -1 token
            await keeper.done()

    asyncio.run(scenario())


def test_our_headers_replace_bastions_and_an_unmetered_admission_keeps_them() -> None:
    quota = parse_rules(rules_text("{requests_per_minute: 5}")).clients.quota_of("billing")
    headers = http.Headers(x_ratelimit_limit_requests="9999", content_type="text/plain")
    admitted = Admitted(quota, QuotaUsage(2, 0, 0), 0, (0, 0), 30.0)  # type: ignore[arg-type]
    put_rate_limit_headers(headers, admitted)
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-reset-requests"] == "30s"
    assert len(headers.get_all("x-ratelimit-limit-requests")) == 1
    bastions = http.Headers(x_ratelimit_limit_requests="9999")
    put_rate_limit_headers(bastions, admitted._replace(unmetered=True))
    assert bastions["x-ratelimit-limit-requests"] == "9999"
