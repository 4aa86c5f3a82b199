"""`bastion-edge run | env | check | sandbox | demo | key-hash | app add`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bastion_edge.cli.check_cmd import cmd_check
from bastion_edge.cli.check_cmd import describe_condition as describe_condition
from bastion_edge.cli.check_cmd import describe_rules as describe_rules
from bastion_edge.cli.cutover_cmd import cutover_banner
from bastion_edge.cli.cutover_cmd import register as register_cutover
from bastion_edge.cli.help_format import Parser
from bastion_edge.cli.key_advice import key_problems
from bastion_edge.cli.rules_file import packaged_rules as packaged_rules
from bastion_edge.cli.rules_file import rules_path as rules_path
from bastion_edge.cli.rules_file import version_line
from bastion_edge.cli.rules_suggest import register as register_rules
from bastion_edge.cli.run_state import RunState, env_target, record_run, remove_state
from bastion_edge.cli.self_command import self_command
from bastion_edge.config.rules import RulesError, apply_environment, load_rules
from bastion_edge.deploy.app_env import app_environment, exported_app_env
from bastion_edge.deploy.exposure import EXIT_EXPOSED, exposure_problem, mode_problem
from bastion_edge.deploy.node_preload import node_env
from bastion_edge.deploy.redirect import register as register_redirect
from bastion_edge.deploy.tls_bundles import CLIENT_BUNDLE, PROXY_CA_CERT, client_bundle, ensure_ca
from bastion_edge.report.cli import register as register_report

DEFAULT_CONFDIR = "~/.bastion-edge"


def console_main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `bastion-edge` command: `main`, then an exit without the interpreter's teardown.

    By the time `main` returns, the command has closed what it opened (the proxy: every
    addon's `done`, logs and stores closed). What is left is Python freeing ~1,150 modules
    one by one, ~0.2 s of CPU at every proxy stop. While another non-daemon thread still
    runs, the exit is the ordinary one, which waits for it."""
    code = main(argv)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(code)
    import logging

    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # `| head` has gone; a stream closed on purpose
        pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(
        prog="bastion-edge",
        description="Zero-code OpenAI -> Bastion migration proxy (a mitmproxy addon).")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the proxy in the foreground")
    run.add_argument("--listen-host", default="127.0.0.1",
                     help="address the proxy listens on (beyond loopback: declare "
                          "clients.apps, or see --allow-unauthenticated)")
    run.add_argument("--listen-port", type=int, default=8080,
                     help="port the proxy listens on (0: any free port, printed at start)")
    run.add_argument("--mode", action="append", default=None, metavar="MODE",
                     help="mitmproxy proxy mode: regular (default) or transparent (no "
                          "other mode starts); repeat to run several side by side (e.g. "
                          "--mode regular --mode transparent@8081)")
    run.add_argument("--transparent-redirect-only", action="store_true",
                     help="a transparent listener beyond loopback receives only what the "
                          "redirect rules send it (a firewall drops direct connections); "
                          "without this such a listener is refused when apps are declared")
    run.add_argument("--rules", default=None,
                     help="rules file (default: $BASTION_RULES, else ./rules.yaml, else "
                          "the packaged default)")
    run.add_argument("--confdir", default=DEFAULT_CONFDIR, help="CA and bundles live here")
    run.add_argument("--metrics-host", default="127.0.0.1",
                     help="address of /metrics, /healthz and /readyz")
    run.add_argument("--metrics-port", type=int, default=9090,
                     help="port of /metrics, /healthz and /readyz; 0 disables them")
    run.add_argument("--access-log", default="", metavar="FILE|-",
                     help="one JSON record per exchange (what `bastion-edge report` "
                          "reads); -: stdout")
    run.add_argument("--access-log-bodies", action="store_true",
                     help="also log JSON bodies (credentials redacted)")
    run.add_argument("--shutdown-grace", type=float, default=20.0, metavar="SECONDS",
                     help="on SIGTERM/SIGINT, let in-flight requests finish this long")
    run.add_argument("--allow-unauthenticated", action="store_true",
                     help="listen beyond loopback although no apps are declared "
                          "(anyone who can connect spends the Bastion key)")
    _add_worker_arguments(run)
    run.add_argument("--web", action="store_true", help="run inside mitmweb for inspection")
    run.add_argument("--web-host", default="127.0.0.1", help="mitmweb's address (--web)")
    run.add_argument("--web-port", type=int, default=8081, help="mitmweb's port (--web)")
    run.set_defaults(handler=_cmd_run)

    env = sub.add_parser("env", help="print the environment an app needs")
    env.add_argument("--confdir", default=None,
                     help=f"the proxy's confdir (default {DEFAULT_CONFDIR})")
    env.add_argument("--listen-port", type=int, default=None,
                     help="default: the port the proxy running with this confdir "
                          "recorded there, else 8080")
    env.add_argument("--proxy-host", default=None,
                     help="host name the app reaches the proxy by (e.g. a sidecar address); "
                          "default: the running proxy's listen address, else 127.0.0.1")
    env.set_defaults(handler=_cmd_env)

    check = sub.add_parser("check", help="validate a rules file and print the mapping")
    check.add_argument("--rules", default=None,
                       help="rules file (default: $BASTION_RULES, else ./rules.yaml, else "
                            "the packaged default)")
    check.add_argument("--live", action="store_true",
                       help="also ask Bastion (GET /v1/models with the configured keys) which "
                            "model would serve each mapped id now; exit 1 if one has none")
    check.add_argument("--confdir", default=DEFAULT_CONFDIR,
                       help="where the upstream CA bundle is written (--live)")
    check.add_argument("--rules-only", action="store_true",
                       help="validate the rules file only: an unset Bastion key (variable "
                            "or file the rules name) is not an error")
    check.set_defaults(handler=cmd_check)

    sandbox = sub.add_parser("sandbox", help="run the local stand-in for Bastion")
    sandbox.add_argument("--host", default="127.0.0.1", help="address the sandbox listens on")
    sandbox.add_argument("--port", type=int, default=8443,
                         help="its HTTPS port (0: any free port, printed at start)")
    sandbox.add_argument("--tls-dir", default="~/.bastion-edge/sandbox",
                         help="its CA (ca.pem, for BASTION_UPSTREAM_CA) and certificate")
    sandbox.add_argument("--http-port", type=int, default=None,
                         help="also answer plain http here, with Bastion's redirect "
                              "(default: off)")
    sandbox.add_argument("--riva-audio", default="wav",
                         choices=("wav", "wav-placeholder-sizes", "pcm"),
                         help="how the Riva stand-in answers speech")
    sandbox.add_argument("--persona", default="bastion", choices=("bastion", "openai"),
                         help="openai: stand in for OpenAI instead (cutover rehearsals)")
    sandbox.add_argument("--unavailable-model", action="append", default=[], metavar="ID",
                         help="answer 404 model_not_found for this model and leave it out "
                              "of /v1/models (repeatable; also PATCH /sandbox/models/ID)")
    sandbox.add_argument("--capabilities", default=None, metavar="RULES",
                         help="a rules file whose `capabilities:` the sandbox enforces: a "
                              "field a model lacks answers 502 upstream_error (default: "
                              "none enforced)")
    sandbox.set_defaults(handler=_cmd_sandbox)

    demo = sub.add_parser("demo", help="sandbox + proxy + real SDK calls, offline")
    demo.set_defaults(handler=_cmd_demo)
    _register_try(sub)

    key_hash = sub.add_parser(
        "key-hash", help="sha256 prefix of an app key read from stdin, for rules' app_key_sha256")
    key_hash.set_defaults(handler=_cmd_key_hash)
    app = sub.add_parser("app", help="apps that may use the proxy (clients.apps)")
    app_sub = app.add_subparsers(dest="app_command", required=True)
    app_add = app_sub.add_parser(
        "add", help="create an app's proxy secret; print its rules entry and proxy URL")
    app_add.add_argument("name")
    app_add.add_argument("--proxy-host", default="127.0.0.1",
                         help="host name the app reaches the proxy by")
    app_add.add_argument("--listen-port", type=int, default=8080,
                         help="the proxy's port, for the printed proxy URL")
    app_add.set_defaults(handler=_cmd_app_add)
    register_report(sub)
    register_cutover(sub)
    register_rules(sub)
    register_redirect(sub)  # `redirect install|remove|show`, handled in redirect.py
    return parser


# ---------------------------------------------------------------------------- run

def _cmd_run(args: argparse.Namespace) -> int:
    path = rules_path(args.rules)
    try:
        rules = apply_environment(load_rules(path), os.environ)
    except (RulesError, OSError) as e:
        print(f"bastion-edge: rules {path}: {e}", file=sys.stderr)
        return 1
    if not os.environ.get("BASTION_WORKER_ID"):  # a pool's parent says it once
        for line in key_problems(rules, os.environ):
            print(f"bastion-edge: {line}", file=sys.stderr, flush=True)
    problem = mode_problem(rules, args.listen_host, args.mode or ["regular"],
                           args.transparent_redirect_only)
    if not problem and not args.allow_unauthenticated:
        problem = exposure_problem(rules, args.listen_host, args.mode or ["regular"])
    if problem:
        print(f"bastion-edge: {problem}", file=sys.stderr)
        return EXIT_EXPOSED
    from bastion_edge.proxy.mitmproxy_seams import SeamRefused, verify_request_path

    try:  # mitmproxy's code at every seam is the code bastion-edge was checked against
        verify_request_path()
    except SeamRefused as e:
        print(f"bastion-edge: {e}", file=sys.stderr)
        return 1
    if args.workers > 1 or args.workers == 0:
        if args.web:
            print("bastion-edge: --web shows one process's flows; use --workers 1",
                  file=sys.stderr)
            return 2
        return _run_workers(args, path)
    if args.reuse_port or args.listen_backlog:
        from bastion_edge.proxy.mitmproxy_seams import PatchRefused
        from bastion_edge.proxy.mitmproxy_seams import install_reuse_port as install

        try:
            install(args.listen_backlog or None, reuse_port=args.reuse_port)
        except PatchRefused as e:
            print(f"bastion-edge: {e}", file=sys.stderr)
            return 1
    busy = _listen_port_problem(args)
    if busy:
        print(f"bastion-edge: {busy}", file=sys.stderr)
        return 1
    return asyncio.run(_run_proxy(args, path))


def _listen_port_problem(args: argparse.Namespace) -> str | None:
    """The listen port taken (by whom), for the modes that listen on it; a worker joins
    the port its pool holds, so it does not ask."""
    if args.reuse_port or all("@" in mode for mode in args.mode or ["regular"]):
        return None
    from bastion_edge.cli.port_check import port_problem

    return port_problem(args.listen_host, args.listen_port,
                        Path(os.path.expanduser(args.confdir)))


async def _run_proxy(args: argparse.Namespace, path: Path) -> int:
    from mitmproxy import options

    from bastion_edge.proxy.addon import BastionEdge
    from bastion_edge.proxy.connection_guard import ConnectionGuard
    from bastion_edge.proxy.gate import ProxyGate
    from bastion_edge.proxy.key_screen import KeyScreen
    from bastion_edge.proxy.tls_advice import TlsAdvice

    confdir = Path(os.path.expanduser(args.confdir))
    confdir.mkdir(parents=True, exist_ok=True)
    opts = options.Options(
        listen_host=args.listen_host, listen_port=args.listen_port, confdir=str(confdir))
    master: Any
    if args.web:
        from mitmproxy.tools.web.master import WebMaster

        master = WebMaster(opts, with_termlog=True)
        opts.update(web_open_browser=False, web_host=args.web_host, web_port=args.web_port)
    else:
        from bastion_edge.proxy.master import proxy_master

        master = proxy_master(opts, args.mode or ["regular"])
    addon = BastionEdge()
    state_files: list[Path] = []
    guard = ConnectionGuard(lambda: addon.shared.rules.limits, addon.shared.metrics)
    master.addons.add(guard, ProxyGate(addon.shared), addon,
                      TlsAdvice(addon.shared.metrics.registry, f"{self_command()} env"),
                      KeyScreen())  # the key screen last: key_screen.py
    if not os.environ.get("BASTION_WORKER_ID"):  # a pool's parent announces the pool
        master.addons.add(_StartupBanner(args, confdir, state_files))
    opts.update(
        mode=args.mode or ["regular"], connection_strategy="lazy", bastion_rules=str(path),
        bastion_metrics_host=args.metrics_host,
        bastion_metrics_port=args.metrics_port, bastion_access_log=args.access_log,
        bastion_access_log_bodies=args.access_log_bodies)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    async def drain_then_stop() -> None:
        left = await addon.drain(args.shutdown_grace)
        if left:
            print(f"bastion-edge: {left} request(s) still running after the grace period",
                  file=sys.stderr, flush=True)
        master.shutdown()

    def on_signal() -> None:
        if stopping:  # a second signal: stop now
            master.shutdown()
        else:
            stopping.append(loop.create_task(drain_then_stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await master.run()
    finally:
        remove_state(state_files, os.getpid())
    return 0


class _StartupBanner:
    """Prints where the proxy listens and what an app needs, once it is listening."""

    def __init__(self, args: argparse.Namespace, confdir: Path, state_files: list[Path]) -> None:
        self.args = args
        self.confdir = confdir
        self.state_files = state_files

    def running(self) -> None:
        from mitmproxy import ctx

        server = ctx.master.addons.get("proxyserver")
        addrs = server.listen_addrs() if server else []
        port = addrs[0][1] if addrs else self.args.listen_port
        state = RunState(self.args.listen_host, port, str(self.confdir), os.getpid())
        self.state_files += record_run(state)  # first: what it says precedes "listening"
        print(f"bastion-edge listening on {self.args.listen_host}:{port}", flush=True)
        print(cutover_banner(rules_path(self.args.rules)), flush=True)
        web_url = getattr(ctx.master, "web_url", None)
        if web_url:
            print(f"mitmweb (rewritten flows annotated): {web_url}", flush=True)
        print(f"CA certificate: {self.confdir / PROXY_CA_CERT}", flush=True)
        print("An app needs:", flush=True)
        print(env_lines(self.confdir, state.proxy_host, port), flush=True)  # as `env` says
        # Done: leave the addon chain, which every hook of every request walks.
        asyncio.get_running_loop().call_soon(ctx.master.addons.remove, self)


def _add_worker_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="proxy processes sharing the listen port (SO_REUSEPORT), the CA "
                          "and the rules, with one /metrics and /readyz; 0: one per core")
    run.add_argument("--listen-backlog", type=int, default=0, metavar="N",
                     help="accept queue length of the listener (default: asyncio's 100 "
                          "for one worker, 1024 with --workers)")
    run.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def _run_workers(args: argparse.Namespace, path: Path) -> int:
    from bastion_edge.cli.workers import run_pool
    from bastion_edge.proxy.mitmproxy_seams import DEFAULT_BACKLOG, PatchRefused
    from bastion_edge.proxy.mitmproxy_seams import install_reuse_port as install
    from bastion_edge.proxy.mitmproxy_seams import uninstall_reuse_port as uninstall

    try:  # refuse before starting anything if mitmproxy's listener code changed
        install(DEFAULT_BACKLOG)
        uninstall()
    except PatchRefused as e:
        print(f"bastion-edge: {e}", file=sys.stderr)
        return 1
    if args.workers == 0:
        args.workers = len(os.sched_getaffinity(0))
    args.listen_backlog = args.listen_backlog or DEFAULT_BACKLOG
    confdir = Path(os.path.expanduser(args.confdir))
    ensure_ca(confdir)  # made once here, not raced by the workers
    args.confdir = str(confdir)

    def announce(port: int) -> list[Path]:
        state = RunState(args.listen_host, port, str(confdir), os.getpid())
        print(f"bastion-edge listening on {args.listen_host}:{port}", flush=True)
        print(cutover_banner(path), flush=True)
        print(f"CA certificate: {confdir / PROXY_CA_CERT}", flush=True)
        print("An app needs:", flush=True)
        print(env_lines(confdir, state.proxy_host, port), flush=True)  # as `env` says
        return record_run(state)

    return run_pool(args, path, announce, lambda files: remove_state(files, os.getpid()))


# ---------------------------------------------------------------------------- env

def env_lines(confdir: Path, host: str, port: int) -> str:
    if (exported := exported_app_env()) is not None:  # in the sidecar: the app's view
        return exported
    ensure_ca(confdir)
    bundle = client_bundle(confdir)
    values = app_environment(f"http://{host}:{port}", bundle, confdir / PROXY_CA_CERT)
    values.update(node_env())  # NODE_OPTIONS="--import <preload>": fetch on Node < 24
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in values.items())


def _cmd_env(args: argparse.Namespace) -> int:
    target = env_target(args.confdir, args.listen_port, args.proxy_host,
                        Path(os.path.expanduser(DEFAULT_CONFDIR)))
    print(env_lines(target.confdir, target.host, target.port))
    print(f"# proxy address from {target.source}", file=sys.stderr)
    print(f"# SSL_CERT_FILE is {CLIENT_BUNDLE}: the system CAs plus the proxy CA", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- others

def _cmd_sandbox(args: argparse.Namespace) -> int:
    from bastion_sandbox import SandboxConfig, run_sandbox

    capabilities = {}
    if args.capabilities:
        try:
            capabilities = dict(load_rules(args.capabilities).capabilities)
        except (RulesError, OSError) as e:
            print(f"bastion-edge sandbox: {args.capabilities}: {e}", file=sys.stderr)
            return 1
    config = SandboxConfig(
        host=args.host, port=args.port, tls_dir=Path(os.path.expanduser(args.tls_dir)),
        http_port=args.http_port, riva_audio=args.riva_audio, persona=args.persona,
        unavailable_models=frozenset(args.unavailable_model), capabilities=capabilities)
    run_sandbox(config)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bastion_edge.rehearsal.demo import run_demo

    return run_demo()


def _register_try(sub: Any) -> None:
    try_ = sub.add_parser("try", help="the sandbox and the proxy wired together; prints the "
                                      "env lines to paste; runs until Ctrl-C")
    try_.add_argument("--rules", default=None,
                      help="rules file (default: $BASTION_RULES, else ./rules.yaml, else "
                           "the packaged default)")
    try_.add_argument("--confdir", default=DEFAULT_CONFDIR,
                      help="the proxy's CA, the sandbox's CA and the logs (in try/)")
    try_.add_argument("--listen-port", type=int, default=8080, help="the proxy's port")
    try_.add_argument("--cutover", choices=("split", "mirror", "canary"), default=None,
                      help="rehearse a cutover: a second sandbox poses as OpenAI, the proxy "
                           "runs in this mode; Ctrl-C prints the report command")
    try_.set_defaults(handler=_cmd_try)


def _cmd_try(args: argparse.Namespace) -> int:
    from bastion_edge.cli.try_it import run_try

    return run_try(rules_path(args.rules), Path(os.path.expanduser(args.confdir)),
                   args.listen_port, args.cutover)


def _cmd_key_hash(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip()
    if not key:
        print("bastion-edge key-hash: pipe the key on stdin", file=sys.stderr)
        return 2
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"app_key_sha256: \"{digest[:16]}\"   # full: {digest}")
    return 0



def _cmd_app_add(args: argparse.Namespace) -> int:
    from bastion_edge.config.rules import APP_NAME
    from bastion_edge.core.proxy_auth import new_secret, proxy_url, secret_sha256

    if not APP_NAME.fullmatch(args.name):
        print(f"bastion-edge app add: {args.name!r}: use letters, digits, '.', '_' or '-'",
              file=sys.stderr)
        return 2
    secret = new_secret()
    print("# rules.yaml, under clients.apps (the secret itself is not stored anywhere):")
    print(f"  - name: {args.name}")
    print(f"    secret_sha256: {secret_sha256(secret)}")
    print("# the app's proxy URL (shown once; keep it like a password):")
    print(f"HTTPS_PROXY={proxy_url(args.name, secret, args.proxy_host, args.listen_port)}")
    return 0
