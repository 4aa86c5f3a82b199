"""Child addons that own one long-lived resource each: its options, start and stop.

Each is a mitmproxy addon (`load`/`configure`/`running`/`done`), listed in
`BastionEdge.addons`; mitmproxy calls the parent, then the children in list order, for
every event, `done` included. What they share is `Shared` (shared.py); what one needs
from another is passed in as a callable when the root builds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from mitmproxy import ctx, exceptions

from bastion_edge.batch.keeper import BatchKeeper
from bastion_edge.batch.runner import RunContext
from bastion_edge.config.key_files import KeyFiles
from bastion_edge.config.reload import RulesWatcher
from bastion_edge.config.rules import (
    Rules,
    RulesError,
    UpstreamRules,
    apply_environment,
    load_rules,
)
from bastion_edge.deploy.tls_bundles import upstream_bundle
from bastion_edge.proxy.model_catalog import ModelCatalog
from bastion_edge.proxy.pool_env import WORKER_SOCKET_ENV
from bastion_edge.proxy.responses_keeper import ResponsesKeeper
from bastion_edge.proxy.shared import Shared
from bastion_edge.proxy.upstream_client import make_upstream_client
from bastion_edge.telemetry.access_log import AccessLog, AccessRecord
from bastion_edge.telemetry.admin_server import AdminServer
from bastion_edge.tts.adapter import TtsAdapter

log = logging.getLogger("bastion_edge")


def confdir() -> Path:
    return Path(os.path.expanduser(ctx.options.confdir))


class RulesAddon:
    """`bastion_rules`: load, validate, publish to `Shared`, hot-reload."""

    name = "bastion_rules_source"

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.path: Path | None = None
        self.watcher: RulesWatcher | None = None

    def load(self, loader: Any) -> None:
        loader.add_option(
            "bastion_rules", str, "",
            "Rules file. Default: $BASTION_RULES, else ./rules.yaml. Hot-reloaded.")

    def configure(self, updated: set[str]) -> None:
        if "bastion_rules" not in updated:
            return
        path = Path(ctx.options.bastion_rules or self.shared.environ.get("BASTION_RULES")
                    or "rules.yaml")
        try:
            rules = apply_environment(load_rules(path), self.shared.environ)
        except (RulesError, OSError) as e:
            self.shared.metrics.reloads.labels("failure").inc()
            raise exceptions.OptionsError(f"bastion-edge rules {path}: {e}") from e
        self.path = path
        self._install(rules, reloaded=False)
        if self.watcher is not None:
            self.watcher.retarget(path, rules.sha256)

    def running(self) -> None:
        if self.path is not None:
            self.watcher = RulesWatcher(
                self.path, self.shared.rules.sha256, self._reloaded, self._reload_failed)
            self.watcher.start()

    async def done(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()

    def _install(self, rules: Rules, reloaded: bool) -> None:
        self.shared.publish(rules)
        self.shared.metrics.rules_loaded(rules, time.time())
        self._apply_mitmproxy_options(rules)
        log.info("bastion-edge rules loaded from %s (sha256 %s)", rules.source, rules.sha256[:12])
        self.shared.announce(rules, reloaded)

    def _reloaded(self, rules: Rules) -> None:
        try:
            self._install(apply_environment(rules, self.shared.environ), reloaded=True)
        except (RulesError, exceptions.OptionsError) as e:
            self._reload_failed(e)

    def _reload_failed(self, error: Exception) -> None:
        self.shared.metrics.reloads.labels("failure").inc()
        log.error("bastion-edge: rejected rules change, still serving the last good rules: %s",
                  error)

    @staticmethod
    def _apply_mitmproxy_options(rules: Rules) -> None:
        """Interception scope, lazy upstream connections and upstream trust follow the rules."""
        wanted: dict[str, Any] = {
            "allow_hosts": [rules.allow_hosts_regex()],
            "connection_strategy": "lazy",
            # SDKs speak HTTP/1.1; keeping the intercepted hop on HTTP/1.1 gives every
            # client the same error envelopes and streamed, re-framed uploads.
            "http2": False,
        }
        if rules.upstream.ca_file:
            wanted["ssl_verify_upstream_trusted_ca"] = str(
                upstream_bundle(confdir(), rules.upstream.ca_file))
        changes = {k: v for k, v in wanted.items() if getattr(ctx.options, k) != v}
        if changes:
            ctx.options.update(**changes)


class AccessLogAddon:
    """`bastion_access_log`: the JSON access log. Listed last: it closes after every
    addon that may still log (batch lines, mirrored copies) has stopped."""

    name = "bastion_access_log"

    def __init__(self) -> None:
        self.log: AccessLog | None = None

    def load(self, loader: Any) -> None:
        loader.add_option(
            "bastion_access_log", str, "",
            "JSON access log: a file path, '-' for stdout, empty for none.")
        loader.add_option(
            "bastion_access_log_bodies", bool, False,
            "Also log JSON request/response bodies (up to 64 KiB, credentials redacted).")

    def configure(self, updated: set[str]) -> None:
        if "bastion_access_log" in updated:
            if self.log is not None:
                self.log.close()
            target = ctx.options.bastion_access_log
            self.log = AccessLog(target) if target else None

    def write(self, record: AccessRecord) -> None:
        if self.log is not None:
            self.log.write(record)

    def done(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


class AdminAddon:
    """/metrics, /healthz, /readyz on `bastion_metrics_port`; a pool worker's socket."""

    name = "bastion_admin"

    def __init__(self, shared: Shared, readiness: Callable[[], tuple[bool, str]]) -> None:
        self.shared = shared
        self.readiness = readiness
        self.servers: list[AdminServer] = []
        self.port: int | None = None
        shared.listener(lambda: self.port, dialed=False)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "bastion_metrics_host", str, "127.0.0.1", "Address of /metrics, /healthz, /readyz.")
        loader.add_option(
            "bastion_metrics_port", int, 9090,
            "Port of /metrics, /healthz, /readyz; 0 disables them.")

    async def running(self) -> None:
        registry = self.shared.metrics.registry
        if ctx.options.bastion_metrics_port:
            admin = AdminServer(registry, self.readiness)
            self.servers.append(admin)
            await admin.start(ctx.options.bastion_metrics_host, ctx.options.bastion_metrics_port)
            self.port = admin.port
            log.info("bastion-edge metrics on http://%s:%s/metrics",
                     ctx.options.bastion_metrics_host, admin.port)
        socket_path = self.shared.environ.get(WORKER_SOCKET_ENV)
        if socket_path:  # a `--workers` pool's parent asks here
            admin = AdminServer(registry, self.readiness)
            self.servers.append(admin)
            await admin.start_unix(socket_path)

    async def done(self) -> None:
        for admin in self.servers:
            await admin.stop()
        self.servers.clear()


class UpstreamAddon:
    """The proxy's own client to Bastion, rebuilt when the upstream rules change."""

    name = "bastion_upstream_client"

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._client: tuple[UpstreamRules, httpx.AsyncClient] | None = None

    def client(self) -> httpx.AsyncClient:
        upstream = self.shared.rules.upstream
        if self._client is None or self._client[0] != upstream:
            if self._client is not None:
                old = self._client[1]
                asyncio.get_running_loop().call_later(
                    upstream.response_timeout_seconds,
                    lambda: asyncio.ensure_future(old.aclose()))
            self._client = (upstream, make_upstream_client(upstream, confdir()))
        return self._client[1]

    async def done(self) -> None:
        if self._client is not None:
            await self._client[1].aclose()
            self._client = None


class TtsAddon:
    """The in-process speech adapter (Riva behind `/v1/audio/speech`)."""

    name = "bastion_tts"

    def __init__(self, shared: Shared, adapter: TtsAdapter) -> None:
        self.adapter = adapter
        shared.listener(lambda: adapter.port, dialed=True)

    async def running(self) -> None:
        await self.adapter.start()

    async def done(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.adapter.stop()


class KeyFilesAddon:
    """Key files (`keys.default_file`, `bastion_key_file`), watched while read."""

    name = "bastion_key_files"

    def __init__(self, key_files: KeyFiles) -> None:
        self.key_files = key_files

    async def done(self) -> None:
        await self.key_files.stop()


class CatalogAddon:
    """Bastion's live model list, refreshed in the background and on rules changes."""

    name = "bastion_model_catalog"

    def __init__(self, shared: Shared, catalog: ModelCatalog) -> None:
        self.shared = shared
        self.catalog = catalog
        shared.on_rules(lambda rules, reloaded: catalog.rules_changed())

    def running(self) -> None:
        self.catalog.start(lambda: self.shared.rules, self.shared.environ, confdir())

    async def done(self) -> None:
        await self.catalog.stop()


class ResponsesAddon:
    """The Responses store (`bastion_responses_store`, `responses_state`)."""

    name = "bastion_responses_state"

    def __init__(self, shared: Shared, keeper: ResponsesKeeper) -> None:
        self.shared = shared
        self.keeper = keeper
        shared.on_rules(self._rules_changed)

    def load(self, loader: Any) -> None:
        self.keeper.load(loader)

    def configure(self, updated: set[str]) -> None:
        self.keeper.configure(updated, self.shared.rules.responses_state)

    async def running(self) -> None:
        await self.keeper.running()

    async def done(self) -> None:
        await self.keeper.done()

    def _rules_changed(self, rules: Rules, reloaded: bool) -> None:
        if reloaded:
            self.keeper.follow(rules.responses_state)


class BatchesAddon:
    """The Files and Batch API: its store, server and runner."""

    name = "bastion_batches"

    def __init__(self, shared: Shared, keeper: BatchKeeper, context: Callable[[], RunContext],
                 logged: Callable[[AccessRecord], None]) -> None:
        self.shared = shared
        self.keeper = keeper
        self.context = context
        self.logged = logged
        shared.listener(lambda: keeper.server.port, dialed=True)

    def configure(self, updated: set[str]) -> None:
        if updated & {"bastion_rules", "confdir"}:
            try:
                self.keeper.configure(self.shared.rules.batches)
            except ValueError as e:
                raise exceptions.OptionsError(f"bastion-edge batches: {e}") from e

    async def running(self) -> None:
        await self.keeper.running(self.context, self.logged, lambda: self.shared.rules.batches)

    async def done(self) -> None:
        await self.keeper.done()
