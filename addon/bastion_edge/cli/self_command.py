"""How another shell calls this very `bastion-edge`: its full path.

After `make install` the command is `.venv/bin/bastion-edge`, not on PATH, so advice
such as `eval "$(bastion-edge env)"` would fail when pasted; the full path works.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

NAME = "bastion-edge"


def self_command() -> str:
    """The full path of the running `bastion-edge` (or the one beside this interpreter)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == NAME and argv0.exists():
        return os.path.abspath(argv0)
    beside = Path(sys.executable).parent / NAME  # a worker (`python -c`), or under pytest
    if beside.exists():
        return str(beside)
    return shutil.which(NAME) or NAME
