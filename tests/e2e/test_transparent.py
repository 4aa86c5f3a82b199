"""Transparent interception in a network namespace the tests create.

Inside one namespace (loopback only, plus 10.200.0.1/.2 and fd00:be::1 on `lo`):
the sandbox (Bastion's stand-in) on 127.0.0.1:8443, `bastion-edge run` with regular
and transparent modes side by side running as uid 65534, a TLS server of its own at
10.200.0.2:443, and the `bastion-edge redirect install` rules. `/etc/netns/<ns>/hosts`
makes api.openai.com resolve to 10.200.0.1 inside it. Apps run unmodified: no proxy
variables, only the proxy CA to trust. Everything is removed afterwards, also on
failure. Needs root; skipped otherwise. The regular-mode Node test needs no root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trustme
import yaml
from harness import (
    APP_KEY,
    BASTION_EDGE,
    BASTION_KEY,
    REPO,
    Process,
    Proxy,
    Sandbox,
    proxy_env,
    start,
    wait_until,
)

from bastion_edge.cli.main import _parser
from bastion_edge.deploy.redirect import CHAIN

T = TypeVar("T")

NODE_DIR = REPO / "sidecar" / "node"
PROXY_UID = 65534  # nobody: the proxy's connections are excluded by uid
API_ADDR, OTHER_ADDR, API_ADDR6 = "10.200.0.1", "10.200.0.2", "fd00:be::1"
OTHER_HOST = "tls-elsewhere.test"
SANDBOX_PORT, REGULAR_PORT, TRANSPARENT_PORT, METRICS_PORT = 8443, 8080, 8081, 9090

NODE_APP = """\
import OpenAI from "openai";
const client = new OpenAI({ maxRetries: 0, timeout: 20000 });
const chat = await client.chat.completions.create({
  model: "gpt-4o", messages: [{ role: "user", content: "hello from node" }] });
const emb = await client.embeddings.create({ model: "text-embedding-3-small", input: "node" });
console.log(JSON.stringify({ chat: chat.model, content: chat.choices[0].message.content,
                             embeddings: emb.model, dims: emb.data[0].embedding.length }));
"""

PYTHON_APP = """\
import json
import openai
try:
    import httpx2 as httpx  # what recent openai releases are built on
except ImportError:
    import httpx
# Its own transport: httpx then ignores HTTPS_PROXY & co. entirely.
transport = httpx.HTTPTransport(retries=0)
client = openai.OpenAI(max_retries=0, http_client=httpx.Client(transport=transport))
chat = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi from python"}])
print(json.dumps({"chat": chat.model, "content": chat.choices[0].message.content}))
"""

TLS_SERVER = """\
import socket, ssl, sys
cert, key, addr = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
server = socket.create_server((addr, 443))
print("listening", flush=True)
while True:
    conn, peer = server.accept()
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(f"{peer[0]}:{peer[1]}".encode())  # who connected, as seen here
    except (OSError, ssl.SSLError):
        pass
"""

TLS_CLIENT = """\
import hashlib, json, socket, ssl, sys
host, cafile = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=cafile)
try:
    with socket.create_connection((host, 443), timeout=10) as raw:
        local_port = raw.getsockname()[1]
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            reply = tls.recv(200).decode()
    print(json.dumps({"local_port": local_port, "cert_sha256": hashlib.sha256(der).hexdigest(),
                      "peer_seen_by_server": reply}))
except OSError as e:
    print(json.dumps({"error": type(e).__name__, "detail": str(e)}))
"""


# --------------------------------------------------------------------------- namespace

@dataclass
class Netns:
    name: str

    def argv(self, args: list[str], *, as_proxy: bool = False) -> list[str]:
        prefix = ["ip", "netns", "exec", self.name]
        if as_proxy:
            # Its own uid (so the uid-owner rule excludes it); DAC_READ_SEARCH only to
            # read the venv and the test's 0700 temp dirs as that uid.
            prefix += ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
                       "--clear-groups", "--inh-caps=+dac_read_search",
                       "--ambient-caps=+dac_read_search"]
        return prefix + args

    def run(self, args: list[str], env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(args), env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def check(self, args: list[str]) -> str:
        done = self.run(args)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that joined the namespace (sockets opened there)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                with open(f"/run/netns/{self.name}") as handle:
                    os.setns(handle.fileno(), os.CLONE_NEWNET)
                box["value"] = fn()
            except BaseException as e:  # re-raised in the caller
                box["error"] = e

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    def redirected_connections(self) -> int:
        """Connections the REDIRECT rules caught so far (nat sees each one once)."""
        listing = self.check(["iptables", "-w", "-t", "nat", "-L", CHAIN, "-n", "-v", "-x"])
        return sum(int(line.split()[0]) for line in listing.splitlines()
                   if "REDIRECT" in line)


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("transparent mode tests need root: they create network namespaces and "
                    "iptables rules (CI runs them as root)")
    missing = [t for t in ("ip", "iptables", "ip6tables", "setpriv", "curl")
               if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install iproute2 iptables "
                    "util-linux curl (`make test` installs them)")


def remove_stale_namespaces() -> None:
    """Namespaces of earlier runs that were killed before their teardown."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in (line.split()[0] for line in listing.splitlines() if line.strip()):
        pid = name.removeprefix("be-e2e-")
        if pid != name and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def require_node() -> None:
    if shutil.which("node") is None:
        pytest.fail("Node.js is missing: `make test` installs it (scripts/system-deps)")
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        pytest.fail(f"{NODE_DIR}/node_modules is missing: run `make test`")


def node_app(folder: Path, source: str = NODE_APP) -> Path:
    """An unmodified app: `new OpenAI()` and nothing else; packages from sidecar/node."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.mjs").write_text(source)
    link = folder / "node_modules"
    if not link.exists():
        link.symlink_to(NODE_DIR / "node_modules")
    return folder / "app.mjs"


def app_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean app environment: no proxy variables unless given."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "OPENAI_API_KEY": APP_KEY, **extra}


def journal_entry(entry: dict[str, Any]) -> tuple[str, str]:
    headers = {str(k).lower(): str(v) for k, v in entry["headers"].items()}
    return headers.get("authorization", ""), str(entry.get("model"))


@dataclass
class Mesh:
    ns: Netns
    tmp: Path
    sandbox: Sandbox
    proxy: Process
    confdir: Path
    access_log: Path
    env_lines: dict[str, str]
    other_ca: Path
    other_cert_sha256: str

    @property
    def proxy_ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def journal(self) -> list[dict[str, Any]]:
        return self.ns.call(self.sandbox.journal)

    def clear_journal(self) -> None:
        self.ns.call(self.sandbox.clear_journal)

    def tls_client(self, host: str) -> dict[str, Any]:
        done = self.ns.run([sys.executable, str(self.tmp / "tls_client.py"), host,
                            str(self.other_ca)])
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def install(self) -> str:
        return self.ns.check([BASTION_EDGE, "redirect", "install", "--proxy-port",
                              str(TRANSPARENT_PORT), "--proxy-uid", str(PROXY_UID)])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    require_root_and_tools()
    remove_stale_namespaces()
    tmp = tmp_path_factory.mktemp("transparent")
    ns = Netns(f"be-e2e-{os.getpid()}")
    netns_etc = Path("/etc/netns")
    etc_existed = netns_etc.exists()
    processes: list[Process] = []
    with contextlib.ExitStack() as cleanup:
        # Registered first, run last: namespace (and every rule in it) and hosts file.
        cleanup.callback(lambda: netns_etc.rmdir() if not etc_existed and netns_etc.exists()
                         and not any(netns_etc.iterdir()) else None)
        cleanup.callback(shutil.rmtree, netns_etc / ns.name, True)
        cleanup.callback(subprocess.run, ["ip", "netns", "del", ns.name], check=False,
                         capture_output=True)
        cleanup.callback(lambda: [p.stop(10) for p in reversed(processes)])

        subprocess.run(["ip", "netns", "add", ns.name], check=True)
        for args in (["link", "set", "lo", "up"],
                     ["addr", "add", f"{API_ADDR}/32", "dev", "lo"],
                     ["addr", "add", f"{OTHER_ADDR}/32", "dev", "lo"],
                     ["addr", "add", f"{API_ADDR6}/128", "dev", "lo"]):
            subprocess.run(["ip", "-n", ns.name, *args], check=True)
        (netns_etc / ns.name).mkdir(parents=True)
        (netns_etc / ns.name / "hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n{API_ADDR} api.openai.com\n"
            f"{OTHER_ADDR} {OTHER_HOST}\n")

        # Another TLS host, with a certificate of its own.
        other_ca = trustme.CA()
        other_cert = other_ca.issue_cert(OTHER_HOST)
        other_ca.cert_pem.write_to_path(str(tmp / "other-ca.pem"))
        other_cert.cert_chain_pems[0].write_to_path(str(tmp / "other-cert.pem"))
        other_cert.private_key_pem.write_to_path(str(tmp / "other-key.pem"))
        der = ssl.PEM_cert_to_DER_cert(other_cert.cert_chain_pems[0].bytes().decode())
        (tmp / "tls_server.py").write_text(TLS_SERVER)
        (tmp / "tls_client.py").write_text(TLS_CLIENT)
        server = start(ns.argv([sys.executable, str(tmp / "tls_server.py"),
                                str(tmp / "other-cert.pem"), str(tmp / "other-key.pem"),
                                OTHER_ADDR]), tmp / "tls-server.log")
        processes.append(server)
        wait_until(lambda: "listening" in server.log(), what="TLS server")

        box = start(ns.argv([BASTION_EDGE, "sandbox", "--port", str(SANDBOX_PORT),
                             "--tls-dir", str(tmp / "sandbox-tls")]), tmp / "sandbox.log")
        processes.append(box)
        sandbox = Sandbox(box, SANDBOX_PORT, 0, tmp / "sandbox-tls")
        wait_until(lambda: box.popen.poll() is None and ns.call(
            lambda: sandbox.client().get(f"https://127.0.0.1:{SANDBOX_PORT}/sandbox/journal")
            .status_code == 200), what="sandbox in the namespace")

        proxy_dir = tmp / "proxy"
        proxy_dir.mkdir()
        (proxy_dir / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
        os.chown(proxy_dir, PROXY_UID, PROXY_UID)
        confdir, access_log = proxy_dir / "confdir", proxy_dir / "access.log"
        env = proxy_env(sandbox, HOME=str(proxy_dir))
        proxy = start(ns.argv([
            BASTION_EDGE, "run", "--listen-port", str(REGULAR_PORT),
            "--mode", "regular", "--mode", f"transparent@{TRANSPARENT_PORT}",
            "--mode", f"transparent@::1:{TRANSPARENT_PORT}",
            "--metrics-port", str(METRICS_PORT), "--confdir", str(confdir),
            "--rules", str(proxy_dir / "rules.yaml"), "--access-log", str(access_log),
            "--shutdown-grace", "1"], as_proxy=True), tmp / "proxy.log", env)
        processes.append(proxy)

        def ready() -> bool:
            if proxy.popen.poll() is not None:
                raise RuntimeError(f"proxy exited:\n{proxy.log()}")
            return ns.call(lambda: httpx.get(
                f"http://127.0.0.1:{METRICS_PORT}/readyz", trust_env=False).status_code == 200)

        wait_until(ready, what="proxy readiness")
        printed = subprocess.run(
            [BASTION_EDGE, "env", "--confdir", str(confdir), "--listen-port", str(REGULAR_PORT)],
            capture_output=True, text=True, check=True).stdout
        env_lines = {}
        for line in printed.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env_lines[name] = shlex.split(value)[0]

        mesh = Mesh(ns, tmp, sandbox, proxy, confdir, access_log, env_lines,
                    tmp / "other-ca.pem", hashlib.sha256(der).hexdigest())
        mesh.install()
        yield mesh


# --------------------------------------------------------------------------- tests

def test_unmodified_node_openai_app_is_captured_transparently(mesh: Mesh) -> None:
    require_node()
    mesh.clear_journal()
    before = mesh.ns.redirected_connections()
    app = node_app(mesh.tmp / "node-app")
    done = mesh.ns.run(["node", str(app)], app_env(
        mesh.tmp, NODE_EXTRA_CA_CERTS=str(mesh.proxy_ca)))  # trust only; no proxy settings
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["chat"] == "gpt-oss-120b" and reply["embeddings"] == "bge-m3"
    assert "hello from node" in reply["content"]
    seen = {e["path"]: journal_entry(e) for e in mesh.journal()}
    assert seen["/v1/chat/completions"] == (f"Bearer {BASTION_KEY}", "gpt-oss-120b")
    assert seen["/v1/embeddings"] == (f"Bearer {BASTION_KEY}", "bge-m3")
    assert mesh.ns.redirected_connections() > before


def test_python_app_with_its_own_httpx_transport_is_captured_transparently(
    mesh: Mesh
) -> None:
    mesh.clear_journal()
    (mesh.tmp / "python_app.py").write_text(PYTHON_APP)
    done = mesh.ns.run([sys.executable, str(mesh.tmp / "python_app.py")], app_env(
        mesh.tmp, SSL_CERT_FILE=mesh.env_lines["SSL_CERT_FILE"]))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chat"] == "gpt-oss-20b"
    [entry] = mesh.journal()
    assert journal_entry(entry) == (f"Bearer {BASTION_KEY}", "gpt-oss-20b")


def test_plain_http_to_openai_is_captured_and_sent_to_bastion_over_https(mesh: Mesh) -> None:
    mesh.clear_journal()
    done = mesh.ns.run(["curl", "-sS", "--noproxy", "*", "http://api.openai.com/v1/embeddings",
                        "-H", f"Authorization: Bearer {APP_KEY}",
                        "-H", "content-type: application/json",
                        "-d", json.dumps({"model": "text-embedding-3-small", "input": "x"})])
    assert json.loads(done.stdout)["model"] == "bge-m3", done.stdout + done.stderr
    [entry] = mesh.journal()
    assert journal_entry(entry) == (f"Bearer {BASTION_KEY}", "bge-m3")


def test_ipv6_connections_are_captured_by_the_ipv6_listener(mesh: Mesh) -> None:
    mesh.clear_journal()
    done = mesh.ns.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(mesh.proxy_ca),
                        "--resolve", f"api.openai.com:443:[{API_ADDR6}]",
                        "https://api.openai.com/v1/models/gpt-4o",
                        "-H", f"Authorization: Bearer {APP_KEY}"])
    assert json.loads(done.stdout)["id"] == "gpt-oss-120b", done.stdout + done.stderr
    assert journal_entry(mesh.journal()[-1])[0] == f"Bearer {BASTION_KEY}"


def test_other_tls_host_is_tunnelled_untouched_with_its_own_certificate(mesh: Mesh) -> None:
    before = mesh.ns.redirected_connections()
    result = mesh.tls_client(OTHER_HOST)  # trusts only that host's own CA
    assert "error" not in result, result
    assert result["cert_sha256"] == mesh.other_cert_sha256
    # It went through the proxy (a second connection, from the proxy's own port).
    assert mesh.ns.redirected_connections() == before + 1
    assert not result["peer_seen_by_server"].endswith(f":{result['local_port']}")
    assert not mesh.access_log.exists() or OTHER_HOST not in mesh.access_log.read_text()


def test_regular_mode_runs_side_by_side_with_only_bastion_edge_env(mesh: Mesh) -> None:
    require_node()
    mesh.clear_journal()
    assert set(mesh.env_lines) >= {"HTTPS_PROXY", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS"}
    before = mesh.ns.redirected_connections()
    app = node_app(mesh.tmp / "node-app")
    done = mesh.ns.run(["node", str(app)], app_env(mesh.tmp, **mesh.env_lines))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chat"] == "gpt-oss-120b"
    assert journal_entry(mesh.journal()[0]) == (f"Bearer {BASTION_KEY}", "gpt-oss-120b")
    assert mesh.ns.redirected_connections() == before  # via HTTPS_PROXY, not the rules


def test_node_app_reaches_bastion_through_regular_mode_without_root(
    proxy: Proxy, sandbox: Sandbox, tmp_path: Path
) -> None:
    """No namespace, no rules: just the lines `bastion-edge env` prints."""
    require_node()
    env = proxy.app_env()
    assert env["NODE_OPTIONS"] == f"--import {NODE_DIR / 'bastion-proxy-preload.mjs'}"
    app = node_app(tmp_path / "node-app")
    done = subprocess.run(["node", str(app)], env=app_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chat"] == "gpt-oss-120b"
    assert journal_entry(sandbox.last("/v1/embeddings")) == (f"Bearer {BASTION_KEY}", "bge-m3")


def test_redirect_is_idempotent_and_remove_restores_direct_connectivity(mesh: Mesh) -> None:
    def rules() -> str:
        return mesh.ns.check(["iptables", "-w", "-t", "nat", "-S"]) + mesh.ns.check(
            ["ip6tables", "-w", "-t", "nat", "-S"])

    installed = rules()
    assert installed.count(f"-j {CHAIN}") == 2  # one jump per family
    mesh.install()
    assert rules() == installed
    try:
        for _ in range(2):  # remove twice: the second finds nothing and succeeds
            mesh.ns.check([BASTION_EDGE, "redirect", "remove"])
            assert "BASTION" not in rules()
        assert mesh.ns.run([BASTION_EDGE, "redirect", "show"]).returncode == 1
        direct = mesh.tls_client(OTHER_HOST)
        assert direct["peer_seen_by_server"].endswith(f":{direct['local_port']}")
        assert direct["cert_sha256"] == mesh.other_cert_sha256
        # api.openai.com is an address nothing listens on: no longer intercepted.
        refused = mesh.ns.run(["curl", "-sS", "--noproxy", "*", "--max-time", "5",
                               "http://api.openai.com/v1/models"])
        assert refused.returncode == 7, refused.stderr  # couldn't connect
    finally:
        mesh.install()
    assert rules() == installed


# --------------------------------------------------------------------------- example

def test_kubernetes_example_installs_the_redirect_in_an_init_container_with_net_admin() -> None:
    documents = list(yaml.safe_load_all(
        (REPO / "sidecar" / "examples" / "kubernetes-transparent.yaml").read_text()))
    spec = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    redirect, sidecar = spec["initContainers"]
    capabilities = redirect["securityContext"]["capabilities"]
    assert capabilities == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    args = _parser().parse_args(redirect["command"][1:] + redirect.get("args", []))
    assert (args.command, args.redirect_action) == ("redirect", "install")
    assert "capabilities" not in sidecar.get("securityContext", {})
    assert sidecar["restartPolicy"] == "Always"
    assert args.proxy_uid == [str(sidecar["securityContext"]["runAsUser"])]
    modes = next(e["value"] for e in sidecar["env"] if e["name"] == "BASTION_MODE")
    assert f"transparent@{args.proxy_port}" in modes.split(",")
    [app] = spec["containers"]
    app_env_names = {e["name"] for e in app.get("env", [])}
    assert not any(name.endswith("_PROXY") for name in app_env_names)
    assert {"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"} <= app_env_names
    assert "capabilities" not in app.get("securityContext", {})
