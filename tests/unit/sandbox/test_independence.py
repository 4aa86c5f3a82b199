"""The sandbox plays Bastion from the contract: it imports nothing from the proxy.

Were it to share the proxy's decision code (capability detection, error envelopes), a
bug there would be mirrored by the stand-in and invisible to every end-to-end test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bastion_sandbox

PACKAGE = Path(bastion_sandbox.__file__).parent


def imported_modules(source: str) -> set[str]:
    """Every module an `import` or `from ... import` names, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_imported_modules_sees_nested_and_type_checking_imports() -> None:
    source = ("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
              "    from bastion_edge.errors import ApiError\n"
              "def f():\n    import bastion_edge.core.facts\n")
    assert imported_modules(source) == {"os", "typing", "bastion_edge.errors",
                                        "bastion_edge.core.facts"}


def test_the_sandbox_imports_nothing_from_bastion_edge() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, files  # the whole package, not an empty glob
    offending = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in imported_modules(path.read_text())
            if m == "bastion_edge" or m.startswith("bastion_edge."))
        for path in files
    }
    assert {f: m for f, m in offending.items() if m} == {}
