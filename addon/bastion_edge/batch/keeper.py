"""The proxy side of Files and Batches: opens the store, runs the API server and runner.

Its lifecycle is the `BatchesAddon` child of `BastionEdge` (proxy/lifecycle.py); the
request path calls `register` where a plan says `batch_action`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from mitmproxy import ctx
from prometheus_client import CollectorRegistry

from bastion_edge.batch.batch_metrics import BatchMetrics
from bastion_edge.batch.batch_store import (
    BatchStore,
    BatchStoreError,
    Creator,
    open_batch_store,
    store_location,
)
from bastion_edge.batch.runner import BatchRunner, RunContext
from bastion_edge.batch.server import BatchApiServer, Call
from bastion_edge.config.batch_rules import BatchRules
from bastion_edge.core.plan import Plan
from bastion_edge.state.crypto import BodyCipher
from bastion_edge.telemetry.access_log import AccessRecord

log = logging.getLogger("bastion_edge")


class BatchKeeper:
    def __init__(self, registry: CollectorRegistry, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.metrics = BatchMetrics(registry)
        self.store: BatchStore | None = None
        self.rules = BatchRules()  # as opened; the live rules come from `running`
        self._live_rules: Callable[[], BatchRules] = lambda: self.rules
        self._opened: tuple[str, tuple[bytes, ...]] | None = None
        self.server = BatchApiServer(lambda: self.store, self.metrics, self._wake)
        self.runner: BatchRunner | None = None

    def configure(self, rules: BatchRules) -> None:
        """Open (or keep) the store the rules name; raises ValueError on a bad setting."""
        self.rules = rules
        confdir = Path(os.path.expanduser(ctx.options.confdir))
        location = store_location(rules.store, confdir)
        try:
            cipher = BodyCipher.from_env(rules.encryption_key_env, self.environ)
        except ValueError as e:
            raise ValueError(str(e).replace("responses_state", "batches")) from e
        opened = (location, cipher.keys)
        if self.store is not None and opened == self._opened:
            return
        if self.store is not None:
            log.warning("bastion-edge: batches store change takes effect on restart")
            return
        try:
            self.store = open_batch_store(location, cipher)
        except BatchStoreError as e:
            raise ValueError(str(e)) from e
        self._opened = opened
        log.info("bastion-edge: Files and Batches kept in %s%s", self.store.location,
                 " (encrypted at rest)" if cipher.encrypts else "")

    async def running(self, context: Callable[[], RunContext],
                      access_log: Callable[[AccessRecord], None],
                      rules: Callable[[], BatchRules]) -> None:
        """`rules`: the hot-reloaded `batches` rules (limits apply at once; a different
        `store` takes effect on restart)."""
        self._live_rules = rules
        await self.server.start()
        self.runner = BatchRunner(lambda: self.store, self.metrics, context, rules,
                                  access_log)
        self.runner.start()

    async def done(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        await self.server.stop()
        if self.store is not None:
            with contextlib.suppress(BatchStoreError):
                await self.store.close()
            self.store = None

    def _wake(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def register(self, plan: Plan) -> tuple[int, str]:
        """(port, one-shot token) for the request a plan sends to the batch server."""
        assert self.server.port is not None, "batch server not started"
        assert plan.batch_action is not None
        creator = Creator(plan.partition, plan.facts.app, plan.facts.client_ip,
                          plan.facts.app_key_sha256)
        token = self.server.register(Call(plan.batch_action, plan.resource_id, creator,
                                          self._live_rules()))
        return self.server.port, token
