"""Model availability against a real sandbox: `check --live`, the sandbox's rehearsal
options, and the proxy's live model list (metrics) seeing a model disappear.

The proxy-side fallback routing (404 retry, capability routing) is wired into the
request path separately; its end-to-end tests live with that wiring.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import (
    BASTION_EDGE,
    BASTION_KEY,
    REPO,
    Sandbox,
    proxy_env,
    start_proxy,
    start_sandbox,
    wait_until,
)

RULES = """
models:
  gpt-4o-mini: gpt-oss-20b
  text-embedding-3-small: bge-m3
fallbacks:
  gpt-oss-20b: [Llama-3.1-8B-Instruct]
models_refresh_seconds: 0.2
"""
AUTH = {"Authorization": f"Bearer {BASTION_KEY}"}


@pytest.fixture(scope="module")
def vanishing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox where gpt-oss-20b is gone and Llama-3.1-8B lacks tools (CLI options)."""
    tmp = tmp_path_factory.mktemp("vanishing")
    box = start_sandbox(tmp, ["--unavailable-model", "gpt-oss-20b",
                              "--capabilities", str(REPO / "rules.yaml")])
    yield box
    box.process.stop()


@pytest.fixture()
def admin(vanishing: Sandbox) -> Iterator[httpx.Client]:
    with vanishing.client() as c:
        yield c
        c.delete(f"{vanishing.base_url.removesuffix('/v1')}/sandbox/models")


def _check_live(sandbox: Sandbox, rules: Path, tmp: Path,
                **env: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASTION_EDGE, "check", "--live", "--rules", str(rules), "--confdir", str(tmp / "conf")],
        env=proxy_env(sandbox, **env), capture_output=True, text=True, timeout=60)


def _live_row(stdout: str, openai_id: str) -> str:
    live = stdout[stdout.index("\nlive: "):]  # after the static `check` table
    return next(line for line in live.splitlines() if line.startswith(openai_id + " "))


def _rules(tmp: Path, text: str = RULES) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(text)
    return path


def test_sandbox_options_make_a_model_vanish_and_gate_tools(
        vanishing: Sandbox, admin: httpx.Client) -> None:
    listed = {m["id"] for m in admin.get(f"{vanishing.base_url}/models", headers=AUTH)
              .json()["data"]}
    assert "gpt-oss-20b" not in listed and "Llama-3.1-8B-Instruct" in listed
    chat = f"{vanishing.base_url}/chat/completions"
    gone = admin.post(chat, headers=AUTH, json={
        "model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    no_tools = admin.post(chat, headers=AUTH, json={
        "model": "Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]})
    assert no_tools.status_code == 502
    assert no_tools.json()["error"]["code"] == "upstream_error"


def test_check_live_exit_0_when_a_fallback_serves(
        vanishing: Sandbox, admin: httpx.Client, tmp_path: Path) -> None:
    done = _check_live(vanishing, _rules(tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    row = _live_row(done.stdout, "gpt-4o-mini")
    assert re.search(r"gpt-oss-20b\s+NO\s+Llama-3\.1-8B-Instruct", row), row
    assert "every mapped id has an available model" in done.stdout
    assert BASTION_KEY not in done.stdout + done.stderr


def test_check_live_exit_1_when_a_mapped_id_has_no_model(
        vanishing: Sandbox, admin: httpx.Client, tmp_path: Path) -> None:
    origin = vanishing.base_url.removesuffix("/v1")
    admin.patch(f"{origin}/sandbox/models/Llama-3.1-8B-Instruct", json={"available": False})
    done = _check_live(vanishing, _rules(tmp_path), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    row = _live_row(done.stdout, "gpt-4o-mini")
    assert "NONE" in row
    assert "1 mapped id(s) have no available model: gpt-4o-mini" in done.stdout


def test_check_live_exit_1_when_bastion_refuses_the_key(
        vanishing: Sandbox, tmp_path: Path) -> None:
    done = _check_live(vanishing, _rules(tmp_path), tmp_path,
                       QUBITTRON_API_KEY="sk-not-a-bastion-key")
    assert done.returncode == 1
    assert "could not read Bastion's model list" in done.stdout
    assert "HTTP 401" in done.stdout
    assert "sk-not-a-bastion-key" not in done.stdout + done.stderr


def test_check_live_shipped_rules_against_the_full_sandbox(
        sandbox: Sandbox, tmp_path: Path) -> None:
    done = _check_live(sandbox, REPO / "rules.yaml", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NONE" not in done.stdout


def test_proxy_metrics_follow_a_model_that_disappears_between_refreshes(
        vanishing: Sandbox, admin: httpx.Client, tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path / "proxy", proxy_env(vanishing), _rules(tmp_path))
    try:
        def gauge(model: str) -> str | None:
            found = re.search(rf'^bastion_edge_model_available{{model="{re.escape(model)}"}} '
                              r"(\S+)$", proxy.metrics(), re.M)
            return found.group(1) if found else None

        wait_until(lambda: gauge("Llama-3.1-8B-Instruct") == "1.0", what="first list read")
        assert gauge("gpt-oss-20b") == "0.0"
        assert "bastion_edge_models_last_refresh_timestamp_seconds" in proxy.metrics()
        origin = vanishing.base_url.removesuffix("/v1")
        admin.patch(f"{origin}/sandbox/models/Llama-3.1-8B-Instruct", json={"available": False})
        wait_until(lambda: gauge("Llama-3.1-8B-Instruct") == "0.0", what="model gone")
        admin.patch(f"{origin}/sandbox/models/gpt-oss-20b", json={"available": True})
        wait_until(lambda: gauge("gpt-oss-20b") == "1.0", what="model back")
    finally:
        assert proxy.process.stop() == 0, proxy.process.log()
