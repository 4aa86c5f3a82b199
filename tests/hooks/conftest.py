"""Shared by the hook tests: `async def` tests run in their own event loop (the addon's
hooks need a running loop), and a private copy of the shipped rules.yaml."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules.yaml"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(SHIPPED_RULES.read_text())
    return path
