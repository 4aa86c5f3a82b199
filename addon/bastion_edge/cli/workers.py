"""`bastion-edge run --workers N`: N proxy processes on one port, one /metrics for all.

The parent does no proxying. It holds the listen port (a bound, non-listening
SO_REUSEPORT socket, so a port-0 start gets one concrete port every worker and every
restarted worker joins), starts N workers (`bastion-edge run` with the same rules file
and confdir, plus `proxy/mitmproxy_seams.py`), and serves /metrics, /healthz and /readyz:

- /metrics: prometheus-client's multiprocess mode. Workers get `PROMETHEUS_MULTIPROC_DIR`
  and write their values to files there; the parent reads them with
  `MultiProcessCollector`, plus its own `bastion_edge_worker_restarts_total`.
- /readyz: every worker's own readiness (asked over a Unix socket per worker), cached
  by a poller so the endpoint itself never waits on a worker.

A worker that exits while the pool runs is restarted (after a short back-off if it
died quickly) and counted. SIGTERM/SIGINT: the pool stops restarting, signals every
worker (each drains as a single proxy does) and exits 0 once all exited 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bastion_edge.proxy import pool_ports
from bastion_edge.proxy.pool_env import WORKER_ID_ENV, WORKER_SOCKET_ENV

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READINESS_POLL_SECONDS = 0.25  # while a worker starts
SETTLED_POLL_SECONDS = 1.0  # all ready: a probe sees a change within a second
QUICK_DEATH_SECONDS = 2.0  # a worker that dies sooner is restarted after a back-off
MAX_BACKOFF_SECONDS = 5.0
# A worker runs in its own session (a terminal's Ctrl-C reaches the parent only, which
# then drains the workers) and asks Linux for SIGTERM if the parent dies (prctl
# PR_SET_PDEATHSIG), so no orphan keeps serving the port.
_WORKER_MAIN = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(0)\n"
    "from bastion_edge.cli.main import console_main\n"
    "console_main(sys.argv[2:])"
)


def hold_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the port the workers will share; port 0 picks one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host or "0.0.0.0", port))
    except OSError:
        holder.close()
        raise
    return holder


def prepare_multiproc_dir(given: str | None) -> tuple[Path, bool]:
    """The multiprocess metrics directory, emptied of an earlier run's files.
    Returns (dir, whether we made it and should remove it at exit)."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="bastion-edge-metrics-")), True


@dataclass
class Worker:
    index: int
    socket_path: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    detail: str = "starting"
    exit_code: int | None = None


@dataclass
class WorkerPool:
    """Starts, watches and stops the workers."""

    count: int
    argv: list[str]                    # `run ...` arguments for every worker
    env: dict[str, str]
    socket_dir: Path
    on_restart: Callable[[int, int | None], None]
    workers: list[Worker] = field(default_factory=list)
    stopping: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.workers = [Worker(i, self.socket_dir / f"w{i}.sock") for i in range(self.count)]
        self._tasks = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
        self._tasks.append(asyncio.create_task(self._poll_readiness()))

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        with contextlib.suppress(FileNotFoundError):
            worker.socket_path.unlink()
        env = {**self.env, WORKER_ID_ENV: str(worker.index),
               WORKER_SOCKET_ENV: str(worker.socket_path)}
        worker.started_at = time.monotonic()
        worker.ready, worker.detail = False, "starting"
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER_MAIN, str(os.getpid()), *self.argv, env=env,
            start_new_session=True)

    async def _keep(self, worker: Worker) -> None:
        backoff = 0.25
        while True:
            worker.process = await self._spawn(worker)
            code = await worker.process.wait()
            worker.ready, worker.detail = False, f"exited {code}"
            if self.stopping:
                worker.exit_code = code
                return
            self.on_restart(worker.process.pid, code)
            print(f"bastion-edge: worker {worker.index} (pid {worker.process.pid}) exited "
                  f"with {code}; restarting", file=sys.stderr, flush=True)
            if time.monotonic() - worker.started_at < QUICK_DEATH_SECONDS:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            else:
                backoff = 0.25

    async def _poll_readiness(self) -> None:
        while not self.stopping:
            for worker in self.workers:
                worker.ready, worker.detail = await _ask_ready(worker)
            settled = all(worker.ready for worker in self.workers)
            await asyncio.sleep(SETTLED_POLL_SECONDS if settled else READINESS_POLL_SECONDS)

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "draining"
        ready = sum(worker.ready for worker in self.workers)
        details = "; ".join(f"worker {w.index}: {w.detail}" for w in self.workers)
        return ready == len(self.workers), f"{ready}/{len(self.workers)} ready; {details}"

    def signal_all(self, sig: int) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    async def stop(self) -> bool:
        """Signal every worker to drain; True once all exited 0."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return all(worker.exit_code == 0 for worker in self.workers)


async def _ask_ready(worker: Worker) -> tuple[bool, str]:
    import aiohttp as http

    if worker.process is None or worker.process.returncode is not None:
        return False, "not running"
    try:
        connector = http.UnixConnector(path=str(worker.socket_path))
        timeout = http.ClientTimeout(total=1.0)
        async with http.ClientSession(connector=connector, timeout=timeout) as session, \
                session.get("http://worker/readyz") as reply:
            body = await reply.json()
            return reply.status == 200, str(body.get("detail", ""))
    except (TimeoutError, OSError, http.ClientError, ValueError):
        return False, "starting"


def worker_argv(args: argparse.Namespace, port: int, path: Path, backlog: int) -> list[str]:
    """The `run` arguments of one worker: the parent's, on the held port, metrics off
    (the parent serves them), the port shared."""
    a = args
    argv = ["run", "--listen-host", a.listen_host, "--listen-port", str(port),
            "--metrics-port", "0", "--rules", str(path), "--confdir", a.confdir,
            "--access-log", a.access_log, "--shutdown-grace", str(a.shutdown_grace),
            "--listen-backlog", str(backlog), "--reuse-port"]
    for mode in a.mode or []:
        argv += ["--mode", mode]
    if a.access_log_bodies:
        argv.append("--access-log-bodies")
    if a.allow_unauthenticated:
        argv.append("--allow-unauthenticated")
    if a.transparent_redirect_only:
        argv.append("--transparent-redirect-only")
    return argv


def run_pool(args: argparse.Namespace, path: Path, announce: Callable[[int], list[Path]],
             forget: Callable[[list[Path]], None]) -> int:
    return asyncio.run(_run_pool(args, path, announce, forget))


async def _run_pool(args: argparse.Namespace, path: Path, announce: Callable[[int], list[Path]],
                    forget: Callable[[list[Path]], None]) -> int:
    a = args
    metrics_dir, made_dir = prepare_multiproc_dir(os.environ.pop(MULTIPROC_ENV, None))
    os.environ.pop(WORKER_ID_ENV, None)
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    from bastion_edge.telemetry.admin_server import AdminServer

    try:
        holder = hold_port(a.listen_host, a.listen_port)
    except OSError as e:
        from bastion_edge.cli.port_check import port_problem

        print(f"bastion-edge: {port_problem(a.listen_host, a.listen_port, Path(a.confdir), e)}",
              file=sys.stderr)
        return 1
    port = holder.getsockname()[1]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    restarts = Counter("bastion_edge_worker_restarts",
                       "Workers that exited while the pool ran and were restarted.",
                       registry=registry)

    def restarted(pid: int, _code: int | None) -> None:
        restarts.inc()
        mark_process_dead(pid, str(metrics_dir))

    socket_dir = Path(tempfile.mkdtemp(prefix="be-"))
    env = {**os.environ, MULTIPROC_ENV: str(metrics_dir)}
    pool = WorkerPool(a.workers, worker_argv(a, port, path, a.listen_backlog),
                      env, socket_dir, restarted)
    admin: AdminServer | None = None
    if a.metrics_port:
        admin = AdminServer(registry, pool.readiness)
        await admin.start(a.metrics_host, a.metrics_port)
    pool_ports.publish(socket_dir, "pool", [port, *([admin.port] if admin and admin.port else [])])
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def on_signal() -> None:
        if stop_requested.is_set():
            pool.signal_all(signal.SIGTERM)  # a second signal: workers stop now
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    pool.start()
    state_files: list[Path] = []
    try:
        while not stop_requested.is_set():
            if not state_files and pool.readiness()[0]:
                print(f"bastion-edge: {a.workers} workers ready", flush=True)
                state_files = announce(port)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop_requested.wait(), READINESS_POLL_SECONDS)
        clean = await pool.stop()
    finally:
        forget(state_files)
        if admin is not None:
            await admin.stop()
        holder.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
        if made_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if not clean:
        codes = [w.exit_code for w in pool.workers]
        print(f"bastion-edge: workers exited with {codes}", file=sys.stderr, flush=True)
    return 0 if clean else 1
