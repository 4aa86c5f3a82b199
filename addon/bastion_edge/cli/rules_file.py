"""Which rules file a command reads, and the version line.

--rules, else $BASTION_RULES, else ./rules.yaml, else the packaged default: the repo's
rules.yaml shipped as package data (addon/bastion_edge/data/rules.yaml, a copy that
tests/unit/test_cli.py keeps equal), so an installed bastion-edge runs anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def rules_path(given: str | None) -> Path:
    """--rules, else $BASTION_RULES, else ./rules.yaml, else the packaged default (the
    repo's rules.yaml, so an installed bastion-edge runs from any directory)."""
    chosen = given or os.environ.get("BASTION_RULES")
    if chosen:
        return Path(chosen)
    local = Path("rules.yaml")
    return local if local.exists() else packaged_rules()


def packaged_rules() -> Path:
    from importlib import resources

    return Path(str(resources.files("bastion_edge") / "data" / "rules.yaml"))


def version_line() -> str:
    from mitmproxy.version import VERSION

    from bastion_edge import __version__

    return (f"bastion-edge {__version__} (mitmproxy {VERSION}, Python "
            f"{sys.version.split()[0]})")
