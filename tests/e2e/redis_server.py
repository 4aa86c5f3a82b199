"""A throwaway redis-server on a free loopback port (Debian's `redis-server` package)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness import free_port, wait_until


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    """Yields the server's redis:// URL; no persistence; stopped on exit."""
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: apt-get install redis-server (`make test` installs it)"
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True

    try:
        wait_until(up, timeout=10, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
