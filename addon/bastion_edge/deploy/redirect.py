"""`bastion-edge redirect install|remove|show`: iptables rules for transparent mode.

The rules send an app's outbound TCP (ports 443 and 80 by default) to the proxy's
transparent listener, the way a service mesh captures a pod's traffic:

    nat OUTPUT  -p tcp -j BASTION_EDGE_OUTPUT          (one jump, inserted first)
    BASTION_EDGE_OUTPUT
      -m owner --uid-owner <proxy uid> -j RETURN      the proxy's own traffic: no loop
      -d 127.0.0.0/8 -j RETURN                        loopback (::1/128 for IPv6)
      -d <excluded CIDR> -j RETURN                    --exclude-cidr, per family
      -p tcp --dport <excluded port> -j RETURN        --exclude-port
      -p tcp --dport 443 -j REDIRECT --to-ports <proxy port>
      -p tcp --dport 80  -j REDIRECT --to-ports <proxy port>

Everything lives in a dedicated chain: `install` rewrites the chain atomically with
`iptables-restore --noflush` and adds the jump only when missing (idempotent);
`remove` deletes every jump to it and the chain itself, leaving no rule behind.

IPv6: by default the same rules are installed with ip6tables (REDIRECT sends IPv6
connections to [::1]:<proxy port>, so the proxy should also listen there, e.g.
`--mode transparent@::1:8081`; if it does not, IPv6 connections are refused rather
than leaking past the proxy). Where IPv6 is enabled but ip6tables cannot be used,
`install` refuses with a message instead of silently leaving IPv6 uncaptured;
`--ipv6 off` accepts that IPv6 bypasses the proxy.

The rule building below is pure (dataclasses in, argument lists out); only `Runner`
executes anything.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

CHAIN = "BASTION_EDGE_OUTPUT"
TABLE = "nat"
HOOK_CHAIN = "OUTPUT"
DEFAULT_PORTS = ("443", "80")

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
LOOPBACK: dict[Family, str] = {"ipv4": "127.0.0.0/8", "ipv6": "::1/128"}
TOOLS: dict[Family, tuple[str, str]] = {
    "ipv4": ("iptables", "iptables-restore"),
    "ipv6": ("ip6tables", "ip6tables-restore"),
}


class RedirectError(Exception):
    """A problem the user must fix; the message says how."""


# --------------------------------------------------------------------------- model

@dataclass(frozen=True, slots=True)
class RedirectConfig:
    """What to capture and where to send it."""

    proxy_port: int
    proxy_uids: tuple[int, ...] = ()
    proxy_gids: tuple[int, ...] = ()
    ports: tuple[str, ...] = DEFAULT_PORTS  # "443" or a range "8000:8999"
    exclude_cidrs: tuple[str, ...] = ()
    exclude_ports: tuple[str, ...] = ()
    ipv6: Literal["redirect", "off"] = "redirect"

    def __post_init__(self) -> None:
        if not 0 < self.proxy_port < 65536:
            raise RedirectError(f"--proxy-port {self.proxy_port}: not a TCP port")
        if not self.proxy_uids and not self.proxy_gids:
            raise RedirectError(
                "name the proxy's user (--proxy-uid) or group (--proxy-gid): its own "
                "connections must be excluded, or they would be redirected back to itself")
        if not self.ports:
            raise RedirectError("--ports: nothing to redirect")
        for spec in (*self.ports, *self.exclude_ports):
            parse_port_spec(spec)
        for cidr in self.exclude_cidrs:
            parse_cidr(cidr)

    def cidrs(self, family: Family) -> list[str]:
        return [str(net) for net in map(parse_cidr, self.exclude_cidrs)
                if (net.version == 4) == (family == "ipv4")]


@dataclass(frozen=True, slots=True)
class Command:
    """One program invocation; `stdin` is fed to it (iptables-restore)."""

    argv: tuple[str, ...]
    stdin: str | None = None

    def shell(self) -> str:
        text = " ".join(self.argv)
        return f"{text} <<'EOF'\n{self.stdin}EOF" if self.stdin is not None else text


def parse_port_spec(spec: str) -> str:
    """`443` or `8000:8999` (iptables' range syntax; `-` is accepted too)."""
    text = spec.strip().replace("-", ":")
    parts = text.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise RedirectError(f"port {spec!r}: expected a number or a range like 8000:8999") \
            from None
    if len(numbers) > 2 or not all(0 < n < 65536 for n in numbers) or numbers != sorted(numbers):
        raise RedirectError(f"port {spec!r}: expected a number or a range like 8000:8999")
    return text


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise RedirectError(f"--exclude-cidr {text!r}: not an address or CIDR") from None


def split_list(values: Sequence[str] | None) -> tuple[str, ...]:
    """Repeated flags and comma-separated lists are the same thing."""
    return tuple(part.strip() for value in values or () for part in value.split(",")
                 if part.strip())


# --------------------------------------------------------------------------- rules

def chain_rules(config: RedirectConfig, family: Family) -> list[list[str]]:
    """The rules of BASTION_EDGE_OUTPUT for one family, in order (`-A` arguments)."""
    rules: list[list[str]] = []
    rules += [["-m", "owner", "--uid-owner", str(uid), "-j", "RETURN"]
              for uid in config.proxy_uids]
    rules += [["-m", "owner", "--gid-owner", str(gid), "-j", "RETURN"]
              for gid in config.proxy_gids]
    rules.append(["-d", LOOPBACK[family], "-j", "RETURN"])
    rules += [["-d", cidr, "-j", "RETURN"] for cidr in config.cidrs(family)]
    rules += [["-p", "tcp", "--dport", parse_port_spec(p), "-j", "RETURN"]
              for p in config.exclude_ports]
    rules += [["-p", "tcp", "--dport", parse_port_spec(p), "-j", "REDIRECT",
               "--to-ports", str(config.proxy_port)] for p in config.ports]
    return rules


def jump_rule() -> list[str]:
    return ["-p", "tcp", "-j", CHAIN]


def restore_payload(config: RedirectConfig, family: Family) -> str:
    """Input for `iptables-restore --noflush`: declaring the chain creates or flushes it,
    so the whole chain is replaced in one transaction."""
    lines = [f"*{TABLE}", f":{CHAIN} - [0:0]"]
    lines += [" ".join(["-A", CHAIN, *rule]) for rule in chain_rules(config, family)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def families(config: RedirectConfig, ipv6_available: bool) -> list[Family]:
    if config.ipv6 == "off" or not ipv6_available:
        return ["ipv4"]
    return ["ipv4", "ipv6"]


def install_commands(family: Family, config: RedirectConfig, jump_present: bool) -> list[Command]:
    tool, restore = TOOLS[family]
    commands = [Command((restore, "-w", "--noflush"), restore_payload(config, family))]
    if not jump_present:
        commands.append(Command((tool, "-w", "-t", TABLE, "-I", HOOK_CHAIN, "1", *jump_rule())))
    return commands


def remove_commands(family: Family, jumps: int, chain_present: bool) -> list[Command]:
    tool = TOOLS[family][0]
    commands = [Command((tool, "-w", "-t", TABLE, "-D", HOOK_CHAIN, *jump_rule()))] * jumps
    if chain_present:
        commands += [Command((tool, "-w", "-t", TABLE, "-F", CHAIN)),
                     Command((tool, "-w", "-t", TABLE, "-X", CHAIN))]
    return commands


@dataclass(frozen=True, slots=True)
class TableState:
    """What `iptables -t nat -S` says about our chain."""

    chain_present: bool
    jumps: int
    rules: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, listing: str) -> TableState:
        lines = [line.strip() for line in listing.splitlines()]
        jump = " ".join(["-A", HOOK_CHAIN, *jump_rule()])
        return cls(
            chain_present=f"-N {CHAIN}" in lines,
            jumps=sum(1 for line in lines if line == jump),
            rules=tuple(line for line in lines if line.startswith(f"-A {CHAIN} ")
                        or (line.startswith(f"-A {HOOK_CHAIN} ") and line.endswith(f" {CHAIN}"))),
        )


# --------------------------------------------------------------------------- runner

Run = Callable[[Command], "subprocess.CompletedProcess[str]"]


def run_command(command: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command.argv), input=command.stdin, capture_output=True,
                          text=True, check=False)


def ipv6_enabled() -> bool:
    return os.path.exists("/proc/net/if_inet6")


class Runner:
    """Executes the plans above with iptables/ip6tables; `run` is replaceable in tests."""

    def __init__(self, run: Run = run_command, out: Any = None,
                 have_tool: Callable[[str], bool] | None = None,
                 ipv6_available: Callable[[], bool] = ipv6_enabled) -> None:
        self.run = run
        self.out = out or sys.stdout
        self.have_tool = have_tool or (lambda name: shutil.which(name) is not None)
        self.ipv6_available = ipv6_available

    def _check(self, command: Command) -> str:
        done = self.run(command)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            hint = ""
            if "ermission denied" in detail or "must be root" in detail:
                hint = ("\nthe rules need root or CAP_NET_ADMIN (in Kubernetes: an init "
                        "container with the NET_ADMIN capability)")
            raise RedirectError(f"{' '.join(command.argv)} failed: {detail}{hint}")
        return done.stdout

    def state(self, family: Family) -> TableState:
        tool = TOOLS[family][0]
        return TableState.parse(self._check(Command((tool, "-w", "-t", TABLE, "-S"))))

    def _require_tools(self, family: Family) -> None:
        missing = [t for t in TOOLS[family] if not self.have_tool(t)]
        if missing:
            raise RedirectError(
                f"{', '.join(missing)} not found: install iptables "
                "(Debian/Ubuntu: apt-get install iptables; Alpine: apk add iptables)")

    def _usable_families(self, config: RedirectConfig) -> list[Family]:
        chosen = families(config, self.ipv6_available())
        if config.ipv6 == "off":
            print("IPv6 left untouched (--ipv6 off): apps connecting over IPv6 bypass "
                  "bastion-edge", file=self.out)
        elif "ipv6" not in chosen:
            print("IPv6 is not enabled in this network namespace: only IPv4 rules",
                  file=self.out)
        self._require_tools("ipv4")
        self.state("ipv4")  # permission problems surface here, plainly
        if "ipv6" in chosen:
            try:
                self._require_tools("ipv6")
                self.state("ipv6")
            except RedirectError as e:
                raise RedirectError(
                    f"IPv6 is enabled here but its traffic cannot be redirected ({e}). "
                    "Refusing to install rules that IPv6 connections would bypass: make "
                    "ip6tables work (nat table support), disable IPv6 (sysctl "
                    "net.ipv6.conf.all.disable_ipv6=1), or pass --ipv6 off to accept that "
                    "IPv6 goes around the proxy.") from e
        return chosen

    def plan(self, config: RedirectConfig) -> list[Command]:
        """What `install` runs on a host without the rules (runs nothing itself)."""
        commands: list[Command] = []
        for family in families(config, self.ipv6_available()):
            commands += install_commands(family, config, jump_present=False)
        return commands

    def install(self, config: RedirectConfig) -> None:
        chosen = self._usable_families(config)
        created: list[Family] = []
        try:
            for family in chosen:
                jump_present = self.state(family).jumps > 0
                if not jump_present:
                    created.append(family)
                for command in install_commands(family, config, jump_present):
                    self._check(command)
        except RedirectError:
            for family in created:  # a first install is all or nothing
                self._remove_family(family)
            raise
        for family in chosen:
            where = "127.0.0.1" if family == "ipv4" else "[::1]"
            ports = ",".join(config.ports)
            print(f"{family}: tcp ports {ports} -> {where}:{config.proxy_port} "
                  f"(chain {CHAIN})", file=self.out)

    def _remove_family(self, family: Family) -> None:
        state = self.state(family)
        for command in remove_commands(family, state.jumps, state.chain_present):
            self._check(command)

    def remove(self) -> None:
        for family in FAMILIES:
            tool = TOOLS[family][0]
            if not self.have_tool(tool) or (family == "ipv6" and not self.ipv6_available()):
                continue
            try:
                self._remove_family(family)
            except RedirectError:
                if family == "ipv4":
                    raise
                continue  # no usable ip6tables: nothing of ours can be there
            print(f"{family}: bastion-edge rules removed (none left)", file=self.out)

    def show(self) -> bool:
        installed = False
        for family in FAMILIES:
            tool = TOOLS[family][0]
            if not self.have_tool(tool) or (family == "ipv6" and not self.ipv6_available()):
                print(f"{family}: {tool} not available", file=self.out)
                continue
            try:
                state = self.state(family)
            except RedirectError as e:
                print(f"{family}: {e}", file=self.out)
                continue
            if not state.chain_present:
                print(f"{family}: not installed", file=self.out)
                continue
            installed = installed or state.jumps > 0
            if state.jumps == 0:
                print(f"{family}: chain {CHAIN} exists but nat {HOOK_CHAIN} does not jump "
                      "to it (inactive)", file=self.out)
            counters = self._check(Command(
                (tool, "-w", "-t", TABLE, "-L", CHAIN, "-n", "-v", "-x", "--line-numbers")))
            jumps = [rule for rule in state.rules if rule.startswith(f"-A {HOOK_CHAIN} ")]
            print(f"{family}: " + "; ".join(jumps or ["(no jump)"]), file=self.out)
            print("\n".join(f"  {line}" for line in counters.splitlines()), file=self.out)
        return installed


# --------------------------------------------------------------------------- CLI

def resolve_uid(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise RedirectError(f"--proxy-uid {text!r}: no such user") from None


def resolve_gid(text: str) -> int:
    import grp

    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise RedirectError(f"--proxy-gid {text!r}: no such group") from None


def config_from_args(args: argparse.Namespace) -> RedirectConfig:
    return RedirectConfig(
        proxy_port=args.proxy_port,
        proxy_uids=tuple(resolve_uid(u) for u in split_list(args.proxy_uid)),
        proxy_gids=tuple(resolve_gid(g) for g in split_list(args.proxy_gid)),
        ports=split_list(args.ports) or DEFAULT_PORTS,
        exclude_cidrs=split_list(args.exclude_cidr),
        exclude_ports=split_list(args.exclude_port),
        ipv6=args.ipv6,
    )


HELP = f"""\
Redirect this host's or pod's outbound TCP to bastion-edge's transparent listener
(run the proxy with e.g. `bastion-edge run --mode regular --mode transparent@8081`).
Rules live in the nat table's {CHAIN} chain, jumped to from nat OUTPUT; they
need root or CAP_NET_ADMIN (in Kubernetes: an init container with NET_ADMIN).
Loopback (127.0.0.0/8, ::1) is never redirected. Apps must still trust the proxy CA.
"""


def register(sub: Any) -> None:
    """Adds `redirect install|remove|show` to the `bastion-edge` subcommands."""
    redirect = sub.add_parser(
        "redirect", help="install/remove the iptables rules of transparent mode",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = redirect.add_subparsers(dest="redirect_action")

    install = actions.add_parser(
        "install", help="redirect outbound TCP 443/80 to the proxy (idempotent)",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    install.add_argument("--proxy-port", type=int, required=True,
                         help="the proxy's transparent listener port (the N of transparent@N)")
    install.add_argument("--proxy-uid", action="append", metavar="UID|USER",
                         help="user the proxy runs as; its connections are not redirected "
                              "(repeatable; the sidecar image uses 10001)")
    install.add_argument("--proxy-gid", action="append", metavar="GID|GROUP",
                         help="group whose connections are not redirected (repeatable; for a "
                              "proxy sharing the app's user)")
    install.add_argument("--ports", action="append", metavar="PORT[,PORT|A:B]",
                         help="destination ports to redirect (default 443,80)")
    install.add_argument("--exclude-cidr", action="append", metavar="CIDR",
                         help="destinations never redirected, IPv4 or IPv6 (repeatable, or "
                              "comma-separated), e.g. the cluster's service range")
    install.add_argument("--exclude-port", action="append", metavar="PORT",
                         help="destination ports never redirected (with a wide --ports range)")
    install.add_argument("--ipv6", choices=("redirect", "off"), default="redirect",
                         help="redirect: same rules with ip6tables to [::1]:PORT (default; "
                              "refuses if IPv6 is on but ip6tables is unusable); off: leave "
                              "IPv6 alone, so it bypasses the proxy")
    install.add_argument("--dry-run", action="store_true",
                         help="print the commands instead of running them")

    actions.add_parser("remove", help="delete every bastion-edge rule and the chain")
    actions.add_parser("show", help="print the installed rules with packet counters "
                                    "(exit 0 if active, 1 if not)")
    redirect.set_defaults(handler=_cmd_redirect, redirect_parser=redirect)


def _cmd_redirect(args: argparse.Namespace, runner: Runner | None = None) -> int:
    runner = runner or Runner()
    action = args.redirect_action
    if action is None:
        args.redirect_parser.print_help()
        return 2
    try:
        if action == "install":
            config = config_from_args(args)
            if args.dry_run:
                for command in runner.plan(config):
                    print(command.shell())
                return 0
            runner.install(config)
            return 0
        if action == "remove":
            runner.remove()
            return 0
        return 0 if runner.show() else 1
    except RedirectError as e:
        print(f"bastion-edge redirect {action}: {e}", file=sys.stderr)
        return 1
