"""Fixtures: one sandbox and one default-config proxy per session, apps via env only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from harness import APP_KEY, Proxy, Sandbox, proxy_env, start_proxy, start_sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    yield box
    box.process.stop()


@pytest.fixture(scope="session")
def proxy(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = start_proxy(tmp_path_factory.mktemp("proxy"), proxy_env(sandbox))
    yield running
    assert running.process.stop() == 0, running.process.log()


@pytest.fixture(scope="module")
def openai_standin(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Sandbox]:
    """A second sandbox posing as OpenAI itself (the cutover's other upstream)."""
    box = start_sandbox(tmp_path_factory.mktemp("openai"), ["--persona", "openai"],
                        tls_dir=sandbox.tls_dir)
    yield box
    box.process.stop()


def make_client(monkeypatch: pytest.MonkeyPatch, proxy: Proxy, **kwargs: object) -> openai.OpenAI:
    """An unmodified app: OpenAI's SDK with its OpenAI key, configured only by env."""
    for name, value in proxy.app_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return openai.OpenAI(api_key=APP_KEY, max_retries=0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, proxy: Proxy) -> openai.OpenAI:
    return make_client(monkeypatch, proxy)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
