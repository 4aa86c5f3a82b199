"""`bastion-edge run | env | check | sandbox | demo | key-hash | app add`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion_edge.cli.cutover import cutover_banner, describe_cutover
from bastion_edge.cli.cutover import register as register_cutover
from bastion_edge.cli.rules_suggest import register as register_rules
from bastion_edge.cli.run_state import RunState, env_target, remove_state, write_state
from bastion_edge.config.rules import Rules, RulesError, apply_environment, load_rules
from bastion_edge.deploy.app_env import app_environment, exported_app_env
from bastion_edge.deploy.exposure import EXIT_EXPOSED, exposure_problem, mode_problem
from bastion_edge.deploy.node_preload import node_env
from bastion_edge.deploy.redirect import register as register_redirect
from bastion_edge.deploy.tls_bundles import CLIENT_BUNDLE, PROXY_CA_CERT, client_bundle
from bastion_edge.report.cli import register as register_report

DEFAULT_CONFDIR = "~/.bastion-edge"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion-edge",
        description="Zero-code OpenAI -> Bastion migration proxy (a mitmproxy addon).")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the proxy in the foreground")
    run.add_argument("--listen-host", default="127.0.0.1")
    run.add_argument("--listen-port", type=int, default=8080)
    run.add_argument("--mode", action="append", default=None, metavar="MODE",
                     help="mitmproxy proxy mode: regular (default) or transparent (no "
                          "other mode starts); repeat to run several side by side (e.g. "
                          "--mode regular --mode transparent@8081)")
    run.add_argument("--transparent-redirect-only", action="store_true",
                     help="a transparent listener beyond loopback receives only what the "
                          "redirect rules send it (a firewall drops direct connections); "
                          "without this such a listener is refused when apps are declared")
    run.add_argument("--rules", default=None,
                     help="rules file (default: $BASTION_RULES, else ./rules.yaml)")
    run.add_argument("--confdir", default=DEFAULT_CONFDIR, help="CA and bundles live here")
    run.add_argument("--metrics-host", default="127.0.0.1")
    run.add_argument("--metrics-port", type=int, default=9090, help="0 disables")
    run.add_argument("--access-log", default="", metavar="FILE|-")
    run.add_argument("--access-log-bodies", action="store_true",
                     help="also log JSON bodies (credentials redacted)")
    run.add_argument("--shutdown-grace", type=float, default=20.0, metavar="SECONDS",
                     help="on SIGTERM/SIGINT, let in-flight requests finish this long")
    run.add_argument("--allow-unauthenticated", action="store_true",
                     help="listen beyond loopback although no apps are declared "
                          "(anyone who can connect spends the Bastion key)")
    _add_worker_arguments(run)
    run.add_argument("--web", action="store_true", help="run inside mitmweb for inspection")
    run.add_argument("--web-host", default="127.0.0.1")
    run.add_argument("--web-port", type=int, default=8081)
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
    check.add_argument("--rules", default=None)
    check.add_argument("--live", action="store_true",
                       help="also ask Bastion (GET /v1/models with the configured keys) which "
                            "model would serve each mapped id now; exit 1 if one has none")
    check.add_argument("--confdir", default=DEFAULT_CONFDIR,
                       help="where the upstream CA bundle is written (--live)")
    check.set_defaults(handler=_cmd_check)

    sandbox = sub.add_parser("sandbox", help="run the local stand-in for Bastion")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8443)
    sandbox.add_argument("--tls-dir", default="~/.bastion-edge/sandbox")
    sandbox.add_argument("--http-port", type=int, default=None,
                         help="also answer plain http here, with Bastion's redirect")
    sandbox.add_argument("--riva-audio", default="wav",
                         choices=("wav", "wav-placeholder-sizes", "pcm"))
    sandbox.add_argument("--persona", default="bastion", choices=("bastion", "openai"),
                         help="openai: stand in for OpenAI instead (cutover rehearsals)")
    sandbox.add_argument("--unavailable-model", action="append", default=[], metavar="ID",
                         help="answer 404 model_not_found for this model and leave it out "
                              "of /v1/models (repeatable; also PATCH /sandbox/models/ID)")
    sandbox.add_argument("--capabilities", default=None, metavar="RULES",
                         help="a rules file whose `capabilities:` the sandbox enforces: a "
                              "field a model lacks answers 502 upstream_error")
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
    app_add.add_argument("--listen-port", type=int, default=8080)
    app_add.set_defaults(handler=_cmd_app_add)
    register_report(sub)
    register_cutover(sub)
    register_rules(sub)
    register_redirect(sub)  # `redirect install|remove|show`, handled in redirect.py
    return parser


def rules_path(given: str | None) -> Path:
    return Path(given or os.environ.get("BASTION_RULES") or "rules.yaml")


# ---------------------------------------------------------------------------- run

def _cmd_run(args: argparse.Namespace) -> int:
    path = rules_path(args.rules)
    try:
        rules = apply_environment(load_rules(path), os.environ)
    except (RulesError, OSError) as e:
        print(f"bastion-edge: rules {path}: {e}", file=sys.stderr)
        return 1
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
    return asyncio.run(_run_proxy(args, path))


async def _run_proxy(args: argparse.Namespace, path: Path) -> int:
    from mitmproxy import options

    from bastion_edge.proxy.addon import BastionEdge
    from bastion_edge.proxy.connection_guard import ConnectionGuard
    from bastion_edge.proxy.gate import ProxyGate

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
    master.addons.add(guard, ProxyGate(addon.shared), addon)
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
        print(f"bastion-edge listening on {self.args.listen_host}:{port}", flush=True)
        print(cutover_banner(rules_path(self.args.rules)), flush=True)
        self.state_files.append(write_state(
            RunState(self.args.listen_host, port, str(self.confdir), os.getpid())))
        web_url = getattr(ctx.master, "web_url", None)
        if web_url:
            print(f"mitmweb (rewritten flows annotated): {web_url}", flush=True)
        print(f"CA certificate: {self.confdir / PROXY_CA_CERT}", flush=True)
        print("An app needs:", flush=True)
        print(env_lines(self.confdir, self.args.listen_host, port), flush=True)
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
        print(f"bastion-edge listening on {args.listen_host}:{port}", flush=True)
        print(cutover_banner(path), flush=True)
        print(f"CA certificate: {confdir / PROXY_CA_CERT}", flush=True)
        print("An app needs:", flush=True)
        print(env_lines(confdir, args.listen_host, port), flush=True)
        return [write_state(RunState(args.listen_host, port, str(confdir), os.getpid()))]

    return run_pool(args, path, announce, lambda files: remove_state(files, os.getpid()))


# ---------------------------------------------------------------------------- env

def ensure_ca(confdir: Path) -> Path:
    """Create the proxy CA the way mitmproxy does, if it does not exist yet."""
    from mitmproxy import certs

    confdir.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(str(confdir), "mitmproxy", 2048)
    return confdir / PROXY_CA_CERT


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


# ---------------------------------------------------------------------------- check

def _cmd_check(args: argparse.Namespace) -> int:
    path = rules_path(args.rules)
    try:
        rules = apply_environment(load_rules(path), os.environ)
    except (RulesError, OSError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    print(describe_rules(rules, os.environ))
    print(_check_extras(rules))
    if args.live:
        from bastion_edge.cli.live_check import live_check

        confdir = Path(os.path.expanduser(args.confdir))
        confdir.mkdir(parents=True, exist_ok=True)
        status, report = asyncio.run(
            live_check(rules, os.environ, confdir, describe_condition))
        print("\n" + report)
        return status
    return 0


def _check_extras(rules: Rules) -> str:
    """Which known OpenAI ids each glob covers; embedding mappings that change size."""
    from bastion_edge.core.embedding_dims import size_change_warnings
    from bastion_edge.core.known_models import coverage_report, known_openai_ids

    mapping = [(rule.pattern, [choice.use for choice in rule.choices]) for rule in rules.models]
    warnings = size_change_warnings(mapping, rules.embedding_dimensions)
    return "\n".join(["", coverage_report(rules.models, known_openai_ids()), *warnings])


def describe_rules(rules: Rules, environ: os._Environ[str] | dict[str, str]) -> str:
    """The effective configuration as a human-readable table (never key values)."""
    lines = [
        f"rules: {rules.source} (sha256 {rules.sha256[:12]})",
        f"upstream: {rules.upstream.base_url}"
        + (f" (CA {rules.upstream.ca_file})" if rules.upstream.ca_file else ""),
        f"intercepted: openai={', '.join(rules.openai_hosts)}  "
        f"bastion={', '.join(rules.bastion_hosts)}",
        f"unmapped models: {rules.unmapped_models}   reply model: {rules.reply_model}",
        *describe_cutover(rules),
        "",
        f"{'OpenAI model':<28} {'when':<44} Bastion model",
        f"{'-' * 28} {'-' * 44} {'-' * 30}",
    ]
    for rule in rules.models:
        for i, choice in enumerate(rule.choices):
            name = rule.pattern if i == 0 else ""
            lines.append(f"{name:<28} {describe_condition(choice.when):<44} {choice.use}")
    lines += ["", "keys:"]
    if rules.key_file:
        status = "readable" if os.access(rules.key_file, os.R_OK) else "NOT READABLE"
        lines.append(f"  default: file {rules.key_file} ({status})")
    else:
        status = "set" if environ.get(rules.key_env) else "NOT SET"
        lines.append(f"  default: ${rules.key_env} ({status})")
    for key_rule in rules.key_rules:
        status = "set" if environ.get(key_rule.env) else "NOT SET"
        lines.append(f"  when {describe_condition(key_rule.when)}: ${key_rule.env} ({status})")
    if rules.clients.apps:
        lines += ["", "apps (proxy credentials required):"]
        for app in rules.clients.apps:
            key = (f"file {app.bastion_key_file}" if app.bastion_key_file else
                   f"${app.bastion_key_env}" if app.bastion_key_env else "by keys rules")
            lines.append(f"  {app.name:<20} key: {key}")
        if rules.clients.transparent_app:
            lines.append(f"  transparent listeners: {rules.clients.transparent_app}")
    if rules.egress.allow:
        lines.append("egress exceptions: " + ", ".join(a.text for a in rules.egress.allow))
    if rules.tts.voices:
        lines += ["", f"tts: {rules.tts.path}  default voice {rules.tts.default_voice}"]
        lines += [f"  {k:<10} -> {v}" for k, v in rules.tts.voices.items()]
    return "\n".join(lines)


def describe_condition(condition: Any) -> str:
    parts = []
    if condition.endpoints:
        parts.append("endpoint=" + "|".join(condition.endpoints))
    if condition.has_image is not None:
        parts.append(f"has_image={str(condition.has_image).lower()}")
    if condition.prompt_tokens_over is not None:
        parts.append(f"prompt_tokens>{condition.prompt_tokens_over}")
    parts += [f"header {k}={v}" for k, v in condition.headers]
    if condition.app_key_sha256:
        parts.append("app_key_sha256=" + "|".join(condition.app_key_sha256))
    if condition.clients:
        parts.append("client=" + "|".join(str(n) for n in condition.clients))
    if condition.apps:
        parts.append("app=" + "|".join(condition.apps))
    return ", ".join(parts) or "(always)"


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
                      help="rules file (default: $BASTION_RULES, else ./rules.yaml)")
    try_.add_argument("--confdir", default=DEFAULT_CONFDIR)
    try_.add_argument("--listen-port", type=int, default=8080)
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
