"""Every port of a `--workers N` pool, so that no worker lets an app reach another's.

Each process of a pool (the parent with its /metrics, each worker with its TTS adapter,
batch server and listen port) writes the ports it listens on to a small file in the
pool's directory (the one holding the workers' admin sockets); a worker's egress
check reads them all. A single proxy has no pool directory and only its own ports.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from bastion_edge.proxy.pool_env import WORKER_ID_ENV, WORKER_SOCKET_ENV

SUFFIX = ".ports"


def pool_dir(environ: Mapping[str, str]) -> Path | None:
    socket = environ.get(WORKER_SOCKET_ENV)
    return Path(socket).parent if socket else None


def own_name(environ: Mapping[str, str]) -> str:
    return f"w{environ.get(WORKER_ID_ENV, '0')}"


def publish(directory: Path, name: str, ports: Iterable[int]) -> None:
    """Replace this process's entry (atomically: a reader never sees half a file)."""
    text = " ".join(str(port) for port in sorted(set(ports)))
    temporary = directory / f".{name}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        temporary.write_text(text)
        temporary.replace(directory / f"{name}{SUFFIX}")


def read(directory: Path) -> frozenset[int]:
    """The ports of every process of the pool that has published them."""
    ports: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError, ValueError):
                ports.update(int(word) for word in entry.read_text().split())
    return frozenset(ports)
