"""The image tests: `make image` with podman, then pods. Where podman can't run them they
all skip with one line naming what is missing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pods import IMAGE, REPO, missing

_BUILD: dict[str, str | float] = {}
_IMAGE_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where podman can't run them: one skipped test naming what is missing, the rest
    deselected, so the whole folder reports in one line."""
    mine = [item for item in items if _IMAGE_TESTS in Path(str(item.path)).parents]
    reason = missing() if mine else None
    if not reason:
        return
    mine[0].add_marker(pytest.mark.skip(reason=f"image tests: {reason}"))
    config.hook.pytest_deselected(items=mine[1:])
    items[:] = [item for item in items if item not in mine[1:]]


@pytest.fixture(scope="session", autouse=True)
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image, built once per session the way a user builds it (`make image`)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("image") / "make-image.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(["make", "--no-print-directory", "image", "ENGINE=podman",
                               f"IMAGE={IMAGE}"], cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT)
    _BUILD["seconds"] = time.monotonic() - started
    if done.returncode != 0:
        pytest.fail(f"make image failed ({done.returncode}):\n{log.read_text()[-4000:]}")
    print(f"\nmake image: {_BUILD['seconds']:.1f} s (log {log})")
    yield IMAGE
