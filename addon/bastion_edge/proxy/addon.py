"""The composition root: `BastionEdge` builds one child addon per concern and lists them.

mitmproxy's AddonManager traverses an addon's `addons` attribute: every event goes to
the parent, then to each child in list order (`load`, `configure`, `running`, `done`,
the flow hooks). The list order is therefore the start AND the shutdown order:

    rules          bastion_rules: loaded, published to `Shared`, hot-reloaded
    catalog        Bastion's live model list
    key_files      watched key files
    admin          /metrics, /healthz, /readyz (and a pool worker's socket)
    conversations  /v1/conversations and /v1/traces/ingest answered; `conversation`
                   on /v1/responses expanded (conversations_addon.py)
    requests       the request path: plan_head, plan_body, routing (request_path.py)
    replies        the reply path: streaming, fallback, errors (reply_path.py)
    conv. replies  appends a completed response's items to its conversation
    tts            the in-process speech adapter
    mirror         mirrored copies to Bastion: drained on done
    responses      the Responses store
    batches        the Files and Batch API: its runner finishes its lines on done
    canary         the canary's tick (cutover.mode: canary): its percent feeds the
                   request path, the recorder's records its evidence; flushed on done
    recorder       metrics, OTel and the access-log record of each exchange
    quotas         per-app quotas: their counter store, flushed on done
    upstream       the proxy's own client to Bastion
    access_log     closes LAST: batch lines and mirror copies finished while
                   stopping still get their records

Children share only `Shared` (rules snapshot, metrics, internal listener ports); what
one needs from another is handed over here as a callable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from mitmproxy import ctx

from bastion_edge.batch.keeper import BatchKeeper
from bastion_edge.batch.runner import RunContext
from bastion_edge.config.key_files import KeyFiles
from bastion_edge.config.rules import Rules
from bastion_edge.core.planner import Policy
from bastion_edge.proxy import mitmproxy_seams
from bastion_edge.proxy.canary_addon import CanaryChild, canary_tick_seconds
from bastion_edge.proxy.conversations_addon import ConversationsAddon
from bastion_edge.proxy.lifecycle import (
    AccessLogAddon,
    AdminAddon,
    BatchesAddon,
    CatalogAddon,
    KeyFilesAddon,
    ResponsesAddon,
    RulesAddon,
    TtsAddon,
    UpstreamAddon,
    confdir,
)
from bastion_edge.proxy.mirror import MirrorAddon
from bastion_edge.proxy.model_catalog import ModelCatalog
from bastion_edge.proxy.pool_env import WORKER_ID_ENV
from bastion_edge.proxy.quotas import QuotaKeeper
from bastion_edge.proxy.recorder import Recorder
from bastion_edge.proxy.reply_path import ReplyPath
from bastion_edge.proxy.request_path import RequestPath
from bastion_edge.proxy.responses_keeper import ResponsesKeeper
from bastion_edge.proxy.shared import REDACTED, Shared
from bastion_edge.proxy.timeouts import ResponseTimeouts
from bastion_edge.telemetry.metrics import Metrics
from bastion_edge.tts.adapter import TtsAdapter

__all__ = ["REDACTED", "BastionEdge"]


class BastionEdge:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = environ if environ is not None else os.environ
        self.shared = shared = Shared(environ, Metrics())
        self.draining = False
        registry = shared.metrics.registry
        key_files = KeyFiles(registry)  # keys.default_file, bastion_key_file
        catalog = ModelCatalog(shared.metrics)
        tts = TtsAdapter()
        responses = ResponsesKeeper(registry, environ)
        batches = BatchKeeper(registry, environ)
        timeouts = ResponseTimeouts()

        self.rules_source = RulesAddon(shared)
        self.access_log = AccessLogAddon()
        self.upstream = UpstreamAddon(shared)
        self.quotas = QuotaKeeper(shared)
        self.canary = CanaryChild(lambda: shared.rules, confdir, registry,
                                  self._write_line, canary_tick_seconds(environ))
        self.recorder = Recorder(shared, key_files, self.access_log.write,
                                 self.quotas.finished, self.canary.observe_record)
        self.mirror = MirrorAddon(shared, self.upstream.client, self.access_log.write)

        def batch_context() -> RunContext:
            """What a batch line is planned and sent with: the live rules, keys, client."""
            return RunContext(shared.policy, environ, key_files, self.upstream.client(),
                              self.quotas)

        self.requests = RequestPath(
            shared, key_files=key_files, recorder=self.recorder, tts=tts, batches=batches,
            catalog=catalog, responses=responses, timeouts=timeouts,
            client=self.upstream.client, quotas=self.quotas,
            canary_percent=lambda: self.canary.percent)
        self.replies = ReplyPath(
            shared, recorder=self.recorder, responses=responses, timeouts=timeouts,
            catalog=catalog, mirror=self.mirror, client=self.upstream.client,
            worker_id=environ.get(WORKER_ID_ENV, ""))
        # Conversations and trace uploads: answered before the request path plans them;
        # its `replies` wraps the reply stream after the reply path has set it.
        self.conversations = ConversationsAddon(
            lambda: shared.rules.responses_state, registry, environ,
            otel=lambda: self.recorder.otel)
        self.addons: list[object] = [
            self.rules_source,
            CatalogAddon(shared, catalog),
            KeyFilesAddon(key_files),
            AdminAddon(shared, self.readiness),
            self.conversations,
            self.requests,
            self.replies,
            self.conversations.replies,
            TtsAddon(shared, tts),
            self.mirror,
            ResponsesAddon(shared, responses),
            BatchesAddon(shared, batches, batch_context, self.recorder.batch_line),
            self.canary,
            self.recorder,
            self.quotas,
            self.upstream,
            self.access_log,  # last: see the module docstring
        ]

    def _write_line(self, line: str) -> None:
        """A record that is not an exchange (the canary's decisions) into the access log."""
        if self.access_log.log is not None:
            self.access_log.log.write_line(line)

    @property
    def rules(self) -> Rules:
        return self.shared.rules

    @property
    def policy(self) -> Policy:
        return self.shared.policy

    @property
    def metrics(self) -> Metrics:
        return self.shared.metrics

    def load(self, loader: object) -> None:
        mitmproxy_seams.install(lambda: self.shared.rules.limits,
                                self.shared.metrics.limit_rejected)

    async def drain(self, grace_seconds: float) -> int:
        """Stop accepting connections; wait up to `grace_seconds` for in-flight requests.

        Returns how many were still running when the grace period ended.
        """
        self.draining = True
        ctx.options.update(server=False)
        in_flight = self.recorder.in_flight
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await self.mirror.drain()
        return len(in_flight)

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.shared.rules_loaded:
            return False, "rules not loaded"
        server = ctx.master.addons.get("proxyserver")
        if server is None or not server.is_running or not server.listen_addrs():
            return False, "proxy not listening"
        return True, f"rules {self.rules.sha256[:12]}"
