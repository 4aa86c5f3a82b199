"""Before `run` starts mitmproxy: is the listen port free? If not, say who holds it.

mitmproxy's own message advises `--mode regular@8082`; bastion-edge's flag is
`--listen-port`, and when the holder is a `bastion-edge run` that recorded itself in
the same confdir (run-state.json), the message names its pid.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from bastion_edge.cli.run_state import read_state


def bind_error(host: str, port: int) -> OSError | None:
    """Try to bind (not listen) as asyncio's server would: the "address in use" error, or
    None. Other failures (no IPv6, an unknown host name) are left to mitmproxy to report."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return None
    for family, kind, proto, _name, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return e
    return None


def port_problem(host: str, port: int, confdir: Path,
                 error: OSError | None = None) -> str | None:
    """What to tell the user when `host:port` cannot be listened on, else None."""
    if error is None:
        if port == 0:
            return None
        error = bind_error(host, port)
        if error is None:
            return None
    where = f"{host or '*'}:{port}"
    if error.errno != errno.EADDRINUSE:
        return (f"cannot listen on {where}: {error.strerror or error}; choose another "
                "address with --listen-host or --listen-port")
    state = read_state(confdir)
    if state is not None and state.listen_port == port:
        holder = (f"a bastion-edge run (pid {state.pid}, confdir {state.confdir}) "
                  "already listens there")
    else:
        holder = "another process holds it"
    return (f"{where} is already in use: {holder}. Stop it, or choose another port with "
            "--listen-port")
