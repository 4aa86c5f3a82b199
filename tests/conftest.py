"""How `make test` spreads the suite over processes (pytest-xdist, `--dist loadgroup`).

Each test file is one group, run whole by one worker: module fixtures (a proxy, a
sandbox) start once, as they do in a plain `pytest` run. The image tests are one group
together, since they share one image built per session. A test file may name its own
group with `pytest.mark.xdist_group` (none does today).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
IMAGE_TESTS = TESTS / "image"


def group_of(path: Path) -> str:
    """The xdist group of a test file: `image` for the image tests, else the file."""
    if IMAGE_TESTS in path.parents:
        return "image"
    return str(path.relative_to(TESTS))


def start_rank(path: Path) -> int:
    """Longest groups first, so no worker is left with a long one at the end: the image
    tests (a build, then pods), the end-to-end files, then the quick ones."""
    if IMAGE_TESTS in path.parents:
        return 0
    return 1 if (TESTS / "e2e") in path.parents else 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: start_rank(Path(str(item.path))))  # stable: files keep order
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group_of(Path(str(item.path)))))
