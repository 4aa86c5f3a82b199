"""A throwaway redis-server on a free loopback port (Debian's `redis-server` package)."""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis
from harness import free_port, wait_until


def _up(process: subprocess.Popen[bytes], port: int) -> bool:
    """Our redis-server answers on `port` (not another process that holds the port)."""
    if process.poll() is not None:
        raise RuntimeError(f"redis-server exited with {process.returncode}")
    with redis.Redis(port=port, socket_timeout=1) as client:
        try:
            pid = client.info("server")["process_id"]
        except redis.ConnectionError:
            return False
    if pid != process.pid:
        raise RuntimeError(f"port {port} is another redis-server's")
    return True


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    """Yields the server's redis:// URL; no persistence; stopped on exit."""
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: apt-get install redis-server (`make test` installs it)"
    for attempt in range(3):  # the port is picked in advance: retry if it was taken
        port = free_port()
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(functools.partial(_up, process, port), timeout=10, what="redis-server")
            break
        except RuntimeError:
            process.kill()
            process.wait()
            if attempt == 2:
                raise

    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
