"""Bastion's live model list: read in the background, looked up per request.

`ModelCatalog` reads `GET {base_url}/models` with every configured Bastion key at start
and every `models_refresh_seconds` (sooner after a rules change). A failed read keeps
the last good list and is counted. Requests only look up (`available`,
`available_models`): the list is never fetched on the request path. A model that
answered `404 model_not_found` can be `mark_unavailable`d until the next good refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from bastion_edge.config.rules import Rules, UpstreamRules
from bastion_edge.proxy.upstream_client import upstream_ssl_context
from bastion_edge.telemetry.metrics import Metrics

MODELS_TIMEOUT_SECONDS = 15.0
# Says in Bastion's logs (and the sandbox journal) that the proxy itself asked.
CATALOG_USER_AGENT = "bastion-edge model-catalog"
log = logging.getLogger(__name__)


class ModelListError(Exception):
    """Bastion's model list could not be read (never carries a key)."""


async def models_client(upstream: UpstreamRules, confdir: Path,
                        transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A short-lived client trusting what the proxy trusts upstream; no redirects.

    The TLS context (CA bundle file, certificate parsing) is built off the event loop.
    """
    context = await asyncio.to_thread(upstream_ssl_context, upstream, confdir)
    return httpx.AsyncClient(
        verify=context, timeout=MODELS_TIMEOUT_SECONDS,
        follow_redirects=False, trust_env=False, transport=transport)


async def fetch_model_ids(client: httpx.AsyncClient, base_url: str, key: str) -> frozenset[str]:
    """The ids in `GET {base_url}/models`, or ModelListError."""
    url = base_url.rstrip("/") + "/models"
    try:
        response = await client.get(url, headers={"Authorization": f"Bearer {key}",
                                                  "User-Agent": CATALOG_USER_AGENT})
    except httpx.HTTPError as e:
        raise ModelListError(f"GET {url}: {type(e).__name__}: {e}") from None
    if response.status_code != 200:
        raise ModelListError(f"GET {url}: HTTP {response.status_code}")
    try:
        data = response.json().get("data")
        ids = frozenset(item["id"] for item in data)
    except (ValueError, AttributeError, TypeError, KeyError):
        raise ModelListError(f"GET {url}: not an OpenAI model list") from None
    if not all(isinstance(i, str) for i in ids):
        raise ModelListError(f"GET {url}: not an OpenAI model list")
    return ids


def configured_keys(rules: Rules, environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variable name -> Bastion key, for every key the rules use that is set."""
    names = [rules.key_env, *(k.env for k in rules.key_rules)]
    return {name: environ[name].strip() for name in dict.fromkeys(names)
            if environ.get(name, "").strip()}


def configured_bastion_models(rules: Rules) -> tuple[str, ...]:
    """Every Bastion id the rules name: targets, fallbacks, capability entries."""
    ids = {c.use for m in rules.models for c in m.choices}
    ids.update(rules.fallbacks)
    ids.update(m for alternatives in rules.fallbacks.values() for m in alternatives)
    ids.update(rules.capabilities)
    return tuple(sorted(ids))


class ModelCatalog:
    """The last good model list per key, refreshed in the background."""

    def __init__(self, metrics: Metrics | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time, log_failures: bool = True) -> None:
        self.metrics = metrics
        self.log_failures = log_failures
        self.transport = transport
        self.clock = clock
        self.refreshed_at: float | None = None  # last refresh that read every key
        self.failures = 0
        self.last_errors: tuple[str, ...] = ()  # why the last refresh failed (no keys)
        self._lists: dict[str, frozenset[str]] = {}  # key env name -> listed ids
        self._marked: set[str] = set()  # 404 model_not_found since the last refresh
        self._rules: Rules | None = None
        self._wake: asyncio.Event | None = None  # made in start(), on the running loop
        self._task: asyncio.Task[None] | None = None
        self._said_no_key = False  # the missing key is logged once, not per refresh

    # ---------------------------------------------------------------- lookups

    def available_models(self, key_env: str | None = None) -> frozenset[str] | None:
        """Models listed for `key_env`, minus marked ones. With None (or a key whose list
        was never read): the models listed for every key read so far.

        None when no list has been read yet: callers treat every model as available.
        """
        if key_env is not None and key_env in self._lists:
            listed = self._lists[key_env]
        elif self._lists:
            listed = frozenset.intersection(*self._lists.values())
        else:
            return None
        return listed - self._marked if self._marked else listed

    def available(self, model: str, key_env: str | None = None) -> bool | None:
        models = self.available_models(key_env)
        return None if models is None else model in models

    def mark_unavailable(self, model: str) -> None:
        """Bastion answered 404 model_not_found: skip `model` until the next refresh."""
        self._marked.add(model)
        self._publish()

    # ---------------------------------------------------------------- refresh

    async def refresh(self, rules: Rules, environ: Mapping[str, str], confdir: Path) -> bool:
        """Read every configured key's list; True when all were read."""
        self._rules = rules
        keys = configured_keys(rules, environ)
        had_list = bool(self._lists)
        read: dict[str, frozenset[str]] = {}
        errors: list[str] = []
        if not keys:
            errors.append(f"no Bastion key is set (${rules.key_env})")
        else:
            try:
                client = await models_client(rules.upstream, confdir, self.transport)
                async with client:
                    for env, key in keys.items():
                        try:
                            read[env] = await fetch_model_ids(
                                client, rules.upstream.base_url, key)
                        except ModelListError as e:
                            errors.append(f"${env}: {e}")
            except (OSError, ValueError) as e:  # the CA file could not be read
                errors.append(f"upstream CA: {e}")
        # Keys no longer configured are forgotten; failed keys keep their last good list.
        self._lists = {env: read.get(env, self._lists.get(env, frozenset()))
                       for env in keys if env in read or env in self._lists}
        ok = not errors
        self.last_errors = tuple(errors)
        if ok:
            self._marked.clear()
            self.refreshed_at = self.clock()
            if self.metrics is not None:
                self.metrics.models_last_refresh.set(self.refreshed_at)
        else:
            self.failures += 1
            if self.metrics is not None:
                self.metrics.models_refresh_failures.inc()
            if self.log_failures:
                self._log_failure(rules, keys, had_list, errors)
        self._publish()
        return ok

    def _log_failure(self, rules: Rules, keys: Mapping[str, str], had_list: bool,
                     errors: list[str]) -> None:
        """Plainly, and a missing key once (not at every refresh)."""
        if not keys:
            if not self._said_no_key:
                self._said_no_key = True
                log.warning("bastion-edge: no Bastion key is set ($%s): Bastion's model list "
                            "is not read, every mapped model is taken as available",
                            rules.key_env)
            return
        self._said_no_key = False
        kept = ("keeping the last good list" if had_list
                else "no list read yet: every mapped model is taken as available")
        log.warning("bastion-edge: reading Bastion's model list failed (%s): %s",
                    kept, "; ".join(errors))

    def _publish(self) -> None:
        if self.metrics is None or self._rules is None:
            return
        models = self.available_models()
        if models is None:
            return
        self.metrics.models_available(
            {m: m in models for m in configured_bastion_models(self._rules)})

    # ---------------------------------------------------------------- background

    def start(self, rules: Callable[[], Rules], environ: Mapping[str, str],
              confdir: Path) -> None:
        """Refresh now and then every `rules().models_refresh_seconds`, in the background."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(rules, environ, confdir), name="bastion-edge-model-catalog")

    def rules_changed(self) -> None:
        """Refresh soon: the upstream, the keys or the models may have changed."""
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, rules: Callable[[], Rules], environ: Mapping[str, str],
                   confdir: Path) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            current = rules()
            try:
                await self.refresh(current, environ, confdir)
            except Exception:  # never let the loop die; count it like any failure
                log.exception("bastion-edge: model list refresh crashed")
                self.failures += 1
                if self.metrics is not None:
                    self.metrics.models_refresh_failures.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), current.models_refresh_seconds)
