"""`bastion-edge redirect`: the rules it builds, and install/remove against a fake iptables."""

from __future__ import annotations

import io
import subprocess

import pytest

from bastion_edge.cli import main as cli
from bastion_edge.deploy.redirect import (
    CHAIN,
    Command,
    RedirectConfig,
    RedirectError,
    Runner,
    TableState,
    chain_rules,
    parse_port_spec,
    restore_payload,
    split_list,
)


class FakeIptables:
    """Just enough of iptables/ip6tables(-restore) -t nat for our chain and jump."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.chain: dict[str, list[str] | None] = {"iptables": None, "ip6tables": None}
        self.jumps = {"iptables": 0, "ip6tables": 0}
        self.fail_on = fail_on
        self.calls: list[Command] = []

    def __call__(self, command: Command) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        argv = list(command.argv)
        tool = argv[0].removesuffix("-restore")
        if self.fail_on and self.fail_on in " ".join(argv):
            return subprocess.CompletedProcess(argv, 4, "", "iptables: simulated failure")
        if argv[0].endswith("-restore"):
            assert command.stdin is not None
            lines = command.stdin.splitlines()
            assert lines[0] == "*nat" and lines[1] == f":{CHAIN} - [0:0]" and lines[-1] == "COMMIT"
            self.chain[tool] = [line.removeprefix(f"-A {CHAIN} ") for line in lines[2:-1]]
        elif "-S" in argv:
            out = ["-P OUTPUT ACCEPT"]
            if self.chain[tool] is not None:
                out.append(f"-N {CHAIN}")
            out += [f"-A OUTPUT -p tcp -j {CHAIN}"] * self.jumps[tool]
            out += [f"-A {CHAIN} {rule}" for rule in self.chain[tool] or []]
            return subprocess.CompletedProcess(argv, 0, "\n".join(out) + "\n", "")
        elif "-I" in argv:
            assert self.chain[tool] is not None, "jump to a missing chain"
            self.jumps[tool] += 1
        elif "-D" in argv:
            assert self.jumps[tool] > 0
            self.jumps[tool] -= 1
        elif "-F" in argv:
            self.chain[tool] = []
        elif "-X" in argv:
            assert self.jumps[tool] == 0, "chain still referenced"
            self.chain[tool] = None
        elif "-L" in argv:
            return subprocess.CompletedProcess(argv, 0, f"Chain {CHAIN}\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def runner(fake: FakeIptables, *, ipv6: bool = True, tools: set[str] | None = None,
           out: io.StringIO | None = None) -> Runner:
    present = tools if tools is not None else {
        "iptables", "iptables-restore", "ip6tables", "ip6tables-restore"}
    return Runner(run=fake, out=out or io.StringIO(), have_tool=lambda t: t in present,
                  ipv6_available=lambda: ipv6)


CONFIG = RedirectConfig(proxy_port=8081, proxy_uids=(10001,), exclude_cidrs=("10.96.0.0/12",
                        "fd00::/8"), exclude_ports=("8443",))


def test_chain_excludes_proxy_loopback_and_listed_destinations_before_redirecting() -> None:
    assert chain_rules(CONFIG, "ipv4") == [
        ["-m", "owner", "--uid-owner", "10001", "-j", "RETURN"],
        ["-d", "127.0.0.0/8", "-j", "RETURN"],
        ["-d", "10.96.0.0/12", "-j", "RETURN"],
        ["-p", "tcp", "--dport", "8443", "-j", "RETURN"],
        ["-p", "tcp", "--dport", "443", "-j", "REDIRECT", "--to-ports", "8081"],
        ["-p", "tcp", "--dport", "80", "-j", "REDIRECT", "--to-ports", "8081"],
    ]
    v6 = chain_rules(CONFIG, "ipv6")
    assert ["-d", "::1/128", "-j", "RETURN"] in v6 and ["-d", "fd00::/8", "-j", "RETURN"] in v6
    assert ["-d", "10.96.0.0/12", "-j", "RETURN"] not in v6


def test_group_exclusion_and_port_ranges() -> None:
    config = RedirectConfig(proxy_port=15001, proxy_gids=(2000,), ports=("1:65535",),
                            exclude_ports=("22", "5432"))
    rules = chain_rules(config, "ipv4")
    assert rules[0] == ["-m", "owner", "--gid-owner", "2000", "-j", "RETURN"]
    assert rules[-1] == ["-p", "tcp", "--dport", "1:65535", "-j", "REDIRECT",
                         "--to-ports", "15001"]
    assert parse_port_spec("8000-8999") == "8000:8999"


def test_restore_payload_replaces_the_whole_chain_in_one_transaction() -> None:
    payload = restore_payload(RedirectConfig(proxy_port=8081, proxy_uids=(65534,)), "ipv4")
    assert payload == (
        "*nat\n"
        f":{CHAIN} - [0:0]\n"
        f"-A {CHAIN} -m owner --uid-owner 65534 -j RETURN\n"
        f"-A {CHAIN} -d 127.0.0.0/8 -j RETURN\n"
        f"-A {CHAIN} -p tcp --dport 443 -j REDIRECT --to-ports 8081\n"
        f"-A {CHAIN} -p tcp --dport 80 -j REDIRECT --to-ports 8081\n"
        "COMMIT\n")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "--proxy-uid"),
    ({"proxy_uids": (1,), "ports": ("443", "http")}, "port 'http'"),
    ({"proxy_uids": (1,), "ports": ("9000:8000",)}, "port '9000:8000'"),
    ({"proxy_uids": (1,), "exclude_cidrs": ("10.0.0.0/33",)}, "--exclude-cidr"),
])
def test_invalid_settings_are_refused_with_the_flag_named(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(RedirectError, match=message):
        RedirectConfig(proxy_port=8081, **kwargs)  # type: ignore[arg-type]


def test_repeated_and_comma_separated_flags_are_the_same() -> None:
    assert split_list(["443,80", " 8443 ", ""]) == ("443", "80", "8443")


def test_install_is_idempotent_and_remove_leaves_nothing() -> None:
    fake = FakeIptables()
    run = runner(fake)
    run.install(CONFIG)
    first = (dict(fake.chain), dict(fake.jumps))
    run.install(CONFIG)
    assert (fake.chain, fake.jumps) == first
    assert fake.jumps == {"iptables": 1, "ip6tables": 1}
    run.remove()
    run.remove()
    assert fake.chain == {"iptables": None, "ip6tables": None}
    assert fake.jumps == {"iptables": 0, "ip6tables": 0}


def test_reinstall_with_new_settings_rewrites_the_chain() -> None:
    fake = FakeIptables()
    runner(fake).install(CONFIG)
    runner(fake).install(RedirectConfig(proxy_port=9000, proxy_uids=(10001,)))
    chain = fake.chain["iptables"]
    assert chain is not None and chain[-1].endswith("--to-ports 9000")
    assert not any("10.96.0.0/12" in rule for rule in chain)
    assert fake.jumps["iptables"] == 1


def test_ipv6_enabled_without_ip6tables_is_refused_before_any_rule() -> None:
    fake = FakeIptables()
    with pytest.raises(RedirectError, match="--ipv6 off") as caught:
        runner(fake, tools={"iptables", "iptables-restore"}).install(CONFIG)
    assert "ip6tables" in str(caught.value)
    assert fake.chain == {"iptables": None, "ip6tables": None}


def test_ipv6_without_nat_support_is_refused_too() -> None:
    fake = FakeIptables(fail_on="ip6tables -w -t nat -S")
    with pytest.raises(RedirectError, match="IPv6 is enabled here"):
        runner(fake).install(CONFIG)
    assert fake.chain["iptables"] is None


def test_ipv6_off_installs_ipv4_only_and_says_ipv6_bypasses() -> None:
    fake, out = FakeIptables(), io.StringIO()
    config = RedirectConfig(proxy_port=8081, proxy_uids=(1,), ipv6="off")
    runner(fake, tools={"iptables", "iptables-restore"}, out=out).install(config)
    assert fake.jumps == {"iptables": 1, "ip6tables": 0}
    assert "bypass" in out.getvalue()


def test_host_without_ipv6_gets_ipv4_rules_only() -> None:
    fake = FakeIptables()
    runner(fake, ipv6=False).install(CONFIG)
    assert fake.jumps == {"iptables": 1, "ip6tables": 0}
    assert not any(c.argv[0].startswith("ip6tables") for c in fake.calls)


def test_failed_first_install_rolls_back() -> None:
    fake = FakeIptables(fail_on="ip6tables -w -t nat -I")
    with pytest.raises(RedirectError, match="simulated failure"):
        runner(fake).install(CONFIG)
    assert fake.chain == {"iptables": None, "ip6tables": None}
    assert fake.jumps == {"iptables": 0, "ip6tables": 0}


def test_permission_problem_names_net_admin() -> None:
    def denied(command: Command) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            list(command.argv), 4, "", "Permission denied (you must be root)")

    with pytest.raises(RedirectError, match="NET_ADMIN"):
        Runner(run=denied, out=io.StringIO(), have_tool=lambda t: True,
               ipv6_available=lambda: True).install(CONFIG)


def test_missing_iptables_says_what_to_install() -> None:
    with pytest.raises(RedirectError, match="apt-get install iptables"):
        runner(FakeIptables(), tools=set()).install(CONFIG)


def test_show_reports_whether_rules_are_active() -> None:
    fake, out = FakeIptables(), io.StringIO()
    assert runner(fake, out=out).show() is False
    assert "ipv4: not installed" in out.getvalue()
    runner(fake).install(CONFIG)
    out = io.StringIO()
    assert runner(fake, out=out).show() is True
    assert f"-A OUTPUT -p tcp -j {CHAIN}" in out.getvalue()


def test_table_state_counts_jumps_and_ignores_other_rules() -> None:
    state = TableState.parse(
        f"-N {CHAIN}\n-N DOCKER\n-A OUTPUT -p tcp -j {CHAIN}\n-A OUTPUT -j DOCKER\n"
        f"-A OUTPUT -p tcp -j {CHAIN}\n-A {CHAIN} -d 127.0.0.0/8 -j RETURN\n")
    assert state.chain_present and state.jumps == 2
    assert f"-A {CHAIN} -d 127.0.0.0/8 -j RETURN" in state.rules
    assert "-A OUTPUT -j DOCKER" not in state.rules


def test_cli_dry_run_prints_the_commands_without_running_them(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["redirect", "install", "--proxy-port", "8081", "--proxy-uid", "0",
                     "--exclude-cidr", "10.96.0.0/12", "--ipv6", "off", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("iptables-restore -w --noflush <<'EOF'\n*nat\n")
    assert f"-A {CHAIN} -d 10.96.0.0/12 -j RETURN" in out
    assert f"iptables -w -t nat -I OUTPUT 1 -p tcp -j {CHAIN}" in out
    assert "ip6tables" not in out


def test_cli_errors_exit_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["redirect", "install", "--proxy-port", "8081", "--dry-run"]) == 1
    assert "--proxy-uid" in capsys.readouterr().err
    assert cli.main(["redirect", "install", "--proxy-port", "8081", "--proxy-uid",
                     "no-such-user-here", "--dry-run"]) == 1
    assert "no such user" in capsys.readouterr().err
