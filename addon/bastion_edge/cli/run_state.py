"""Where a running `bastion-edge run` listens, recorded for `bastion-edge env`.

`run` writes `run-state.json` (with its pid) into its confdir once it listens and
removes it when it stops, unless another live `run` already keeps the record there.
`env` (for its `--confdir`, default ~/.bastion-edge) reads it instead of assuming port
8080; its own flags still win. A record whose process is gone is ignored.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "run-state.json"
DEFAULT_PORT = 8080
_ANY_ADDRESS = ("0.0.0.0", "::", "")


@dataclass(frozen=True, slots=True)
class RunState:
    listen_host: str
    listen_port: int
    confdir: str
    pid: int

    @property
    def proxy_host(self) -> str:
        """The host an app on this machine reaches the proxy by."""
        return "127.0.0.1" if self.listen_host in _ANY_ADDRESS else self.listen_host


def write_state(state: RunState) -> Path | None:
    """Record `state` in its confdir (atomically: a reader never sees half a file).

    The record is kept by its owner: while another live process's record is there, it is
    left alone and None is returned (a second `run` on the same confdir neither takes
    the record nor removes it on exit)."""
    path = Path(state.confdir) / STATE_FILE
    current = read_state(Path(state.confdir))
    if current is not None and current.pid != state.pid:
        return None
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(asdict(state)))
    temporary.replace(path)
    return path


def record_run(state: RunState) -> list[Path]:
    """`write_state`, saying on stderr when another running `run` keeps the record; the
    files to remove at exit."""
    path = write_state(state)
    if path is not None:
        return [path]
    owner = read_state(Path(state.confdir))
    pid = owner.pid if owner is not None else "?"
    print(f"bastion-edge: another bastion-edge run (pid {pid}) keeps the record in "
          f"{Path(state.confdir) / STATE_FILE}: `bastion-edge env --confdir {state.confdir}` "
          "points at that one; give this one's port with --listen-port",
          file=sys.stderr, flush=True)
    return []


def remove_state(paths: list[Path], pid: int) -> None:
    """Remove the records this process wrote (not a newer process's)."""
    for path in paths:
        found = read_state(path.parent, check_alive=False)
        if found is not None and found.pid == pid:
            path.unlink(missing_ok=True)


def read_state(confdir: Path, check_alive: bool = True) -> RunState | None:
    try:
        data = json.loads((confdir / STATE_FILE).read_text())
        state = RunState(str(data["listen_host"]), int(data["listen_port"]),
                         str(data["confdir"]), int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive and not _alive(state.pid):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class EnvTarget:
    confdir: Path
    host: str
    port: int
    source: str  # what the values came from, for a note on stderr


def env_target(confdir: str | None, port: int | None, host: str | None,
               default_confdir: Path) -> EnvTarget:
    """What `env` prints for: its flags, else the running proxy's record, else defaults."""
    folder = Path(os.path.expanduser(confdir)) if confdir else default_confdir
    state = read_state(folder)
    if state is None:
        return EnvTarget(folder, host or "127.0.0.1", port or DEFAULT_PORT,
                         "no running `bastion-edge run` recorded in "
                         f"{folder / STATE_FILE}: defaults and flags")
    return EnvTarget(folder, host or state.proxy_host,
                     port or state.listen_port,
                     f"the running `bastion-edge run` (pid {state.pid}) recorded in "
                     f"{folder / STATE_FILE}")
