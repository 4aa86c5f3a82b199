"""The layers, asserted by import: config is data (it imports no package above it), core
decides (no I/O, no mitmproxy), and only proxy/mitmproxy_seams.py replaces mitmproxy code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "addon" / "bastion_edge"


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def offending(package: str, refused: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((PACKAGE / package).glob("*.py")):
        bad = sorted(m for m in imports_of(path)
                     if any(m == r or m.startswith(r + ".") for r in refused))
        if bad:
            out[path.name] = bad
    return out


HIGHER_THAN_CONFIG = tuple(
    f"bastion_edge.{p.name}" for p in PACKAGE.iterdir()
    if p.is_dir() and p.name not in ("config", "__pycache__", "data"))


def test_config_imports_nothing_above_it() -> None:
    assert "bastion_edge.core" in HIGHER_THAN_CONFIG  # the walk found the packages
    assert offending("config", HIGHER_THAN_CONFIG) == {}


@pytest.mark.parametrize("refused", ["mitmproxy", "asyncio", "os", "bastion_edge.proxy",
                                     "bastion_edge.tts", "bastion_edge.state",
                                     "bastion_edge.batch", "bastion_edge.telemetry",
                                     "bastion_edge.cli", "bastion_edge.sandbox"])
def test_core_does_no_io_and_imports_no_higher_layer(refused: str) -> None:
    assert offending("core", (refused,)) == {}


def test_streams_are_codecs_that_import_nothing_of_ours_above_them() -> None:
    """streams/ is the bottom layer (bytes in, bytes out): core may use it, not the reverse."""
    above = tuple(f"bastion_edge.{p.name}" for p in PACKAGE.iterdir()
                  if p.is_dir() and p.name not in ("streams", "__pycache__", "data"))
    assert "bastion_edge.core" in above
    assert offending("streams", above) == {}


def test_the_layering_check_can_see_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom bastion_edge.core.facts import CHAT\n")
    assert imports_of(module) == {"os", "bastion_edge.core.facts"}


def patches_mitmproxy(path: Path) -> bool:
    """An attribute of something imported from mitmproxy is assigned (or setattr'd)."""
    tree = ast.parse(path.read_text(), str(path))
    names = {alias.asname or alias.name.split(".")[0]
             for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
             and (getattr(node, "module", None) or node.names[0].name).startswith("mitmproxy")
             for alias in node.names}
    names.add("mode_servers")  # fetched through a helper in the seams module

    def root(node: ast.expr) -> str | None:
        while isinstance(node, ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and root(t) in names for t in node.targets):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "setattr" and node.args and root(node.args[0]) in names:
            return True
    return False


def test_only_the_seams_module_patches_mitmproxy_internals() -> None:
    patching = [p.name for p in sorted(PACKAGE.rglob("*.py")) if patches_mitmproxy(p)]
    assert patching == ["mitmproxy_seams.py"]


# The unit tests mirror the source tree: tests/unit/<package>/test_<...>.py holds the tests
# of addon/bastion_edge/<package>/ (sandbox/: the bastion_sandbox package), so a module's
# tests are found by its path, not by a grep.
UNIT_TESTS = Path(__file__).resolve().parent
TOP_LEVEL_TESTS = {"test_docs.py", "test_layering.py", "test_sqlite_wal.py", "test_errors.py"}


def test_unit_tests_mirror_the_source_packages() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} | {"sandbox"}
    misplaced = sorted(
        str(path.relative_to(UNIT_TESTS)) for path in UNIT_TESTS.rglob("test_*.py")
        if (path.parent == UNIT_TESTS and path.name not in TOP_LEVEL_TESTS)
        or (path.parent != UNIT_TESTS and path.parent.name not in packages))
    assert not misplaced, f"unit tests outside a folder named for their package: {misplaced}"


def test_module_names_are_unique_within_the_package() -> None:
    """One name, one meaning: two modules of bastion_edge never share a file name
    (the sandbox, its own package, may name its parts after the contract's)."""
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(path.name, []).append(str(path.relative_to(PACKAGE)))
    repeated = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not repeated, f"module names used twice: {repeated}"
