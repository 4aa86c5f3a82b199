"""The NODE_OPTIONS line `bastion-edge env` prints for Node's fetch."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bastion_edge.deploy import node_preload
from bastion_edge.deploy.node_preload import (
    PRELOAD_ENV,
    node_env,
    node_options,
    preload_path,
    preload_ready,
)


def make_preload(root: Path, with_undici: bool = True) -> Path:
    preload = root / "node" / "bastion-proxy-preload.mjs"
    preload.parent.mkdir(parents=True)
    preload.write_text("// preload\n")
    if with_undici:
        package = root / "node" / "node_modules" / "undici" / "package.json"
        package.parent.mkdir(parents=True)
        package.write_text("{}")
    return preload


def test_shipped_preload_sits_in_sidecar_node() -> None:
    path = node_preload.node_dir() / node_preload.PRELOAD_NAME
    assert path.is_file()
    assert "EnvHttpProxyAgent" in path.read_text()


def test_options_import_the_preload_by_absolute_path() -> None:
    assert node_options(Path("/opt/be/preload.mjs")) == "--import /opt/be/preload.mjs"


def test_paths_with_spaces_are_quoted_the_way_node_parses_them() -> None:
    assert node_options(Path('/opt/my apps/"x".mjs')) == '--import "/opt/my apps/\\"x\\".mjs"'


def test_preload_needs_undici_next_to_it(tmp_path: Path) -> None:
    assert preload_ready(make_preload(tmp_path / "a"))
    assert not preload_ready(make_preload(tmp_path / "b", with_undici=False))
    assert not preload_ready(tmp_path / "missing.mjs")


def test_override_variable_points_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preload = make_preload(tmp_path)
    monkeypatch.setenv(PRELOAD_ENV, str(preload))
    assert preload_path() == preload
    assert node_env() == {"NODE_OPTIONS": f"--import {preload}"}


def test_missing_preload_prints_no_line_but_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRELOAD_ENV, str(make_preload(tmp_path, with_undici=False)))
    warn = io.StringIO()
    assert node_env(warn) == {}
    assert "make install" in warn.getvalue()
