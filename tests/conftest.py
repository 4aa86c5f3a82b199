"""How `make test` spreads the suite over processes (pytest-xdist, `-n`).

Each test file is one unit of work, run whole by one process: module fixtures (a proxy,
a sandbox) start once and a module's tests keep their order, as in a plain `pytest`
run. The image tests are one unit together, since they share one image built per
session and one podman. Units start longest first: the image tests, the end-to-end
files, then the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
IMAGE_TESTS = TESTS / "image"


def unit_of(nodeid: str) -> str:
    """The unit of work of a test (its node id): `image` for the image tests, else its
    file. xdist's own `loadgroup` cannot do this on pytest 9.2 (it renames node ids
    through an attribute pytest no longer reads)."""
    path = nodeid.split("::", 1)[0]
    return "image" if path.startswith("tests/image/") else path


def start_rank(path: Path) -> int:
    """Longest units first, so no process is left with a long one at the end."""
    if IMAGE_TESTS in path.parents:
        return 0
    return 1 if (TESTS / "e2e") in path.parents else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: start_rank(Path(str(item.path))))  # stable: files keep order


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: pytest without it runs on
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ByUnit(config, log)
