"""Where the Node preload lives, and the `NODE_OPTIONS` line `bastion-edge env` prints.

Node's global fetch (openai-node v5+) ignores `HTTPS_PROXY` before Node 24 (and on 24+
without `NODE_USE_ENV_PROXY=1`). `sidecar/node/bastion-proxy-preload.mjs`, loaded with
`NODE_OPTIONS="--import <path>"`, installs undici's `EnvHttpProxyAgent` as the global
dispatcher. undici is resolved next to the preload (`sidecar/node/node_modules`,
installed by `make`), so the line is only printed when both are there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

PRELOAD_NAME = "bastion-proxy-preload.mjs"
PRELOAD_ENV = "BASTION_NODE_PRELOAD"  # override: a preload somewhere else


def node_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "sidecar" / "node"


def preload_path(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    override = environ.get(PRELOAD_ENV)
    return Path(override).resolve() if override else node_dir() / PRELOAD_NAME


def preload_ready(path: Path) -> bool:
    """The preload and the undici it imports (resolved from the preload's folder up)."""
    if not path.is_file():
        return False
    return any((folder / "node_modules" / "undici" / "package.json").is_file()
               for folder in path.parents)


def node_options(path: Path) -> str:
    """`--import <path>`, quoted the way Node parses NODE_OPTIONS when needed."""
    text = str(path)
    if any(c.isspace() or c in "\"\\" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"--import {text}"


def node_env(warn: TextIO | None = None) -> dict[str, str]:
    """`{"NODE_OPTIONS": ...}` when the preload is installed, else {} (and a note)."""
    path = preload_path()
    if preload_ready(path):
        return {"NODE_OPTIONS": node_options(path)}
    print(f"# NODE_OPTIONS not set: {path} or its undici is missing (run `make install` "
          "in the bastion-edge checkout); Node's fetch will ignore HTTPS_PROXY before Node 24",
          file=warn or sys.stderr)
    return {}
