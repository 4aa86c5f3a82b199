"""Which Bastion key sources the rules name are unset, said once and plainly.

A missing key otherwise shows only per request (`401 bastion_key_missing`). `run` prints
one line per unset source at start; `check` prints them and exits 1. A variable that is
unset while a near name is set (`QUBITRON_API_KEY` for `QUBITTRON_API_KEY`) is named as
the likely misspelling. Key values are never read into a message.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path

from bastion_edge.config.rules import Rules
from bastion_edge.core.keys import FILE_PREFIX, all_key_sources

MISSING_CODE = "bastion_key_missing"


def _file_has_key(path: str) -> bool:
    try:
        return bool(Path(path).read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


def used_key_sources(rules: Rules) -> list[str]:
    """The sources some request may take its key from (as `core.keys.key_source`): when
    every declared app has its own key, the default and `keys.select` are never used."""
    apps = rules.clients.apps
    if apps and all(a.bastion_key_file or a.bastion_key_env for a in apps):
        return [FILE_PREFIX + a.bastion_key_file if a.bastion_key_file
                else str(a.bastion_key_env) for a in apps]
    return list(dict.fromkeys(all_key_sources(rules)))


def near_name(name: str, environ: Mapping[str, str]) -> str | None:
    """A set variable whose name is close to `name` (a likely misspelling), or None."""
    candidates = [k for k, v in environ.items() if v.strip() and k != name]
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.85)
    return found[0] if found else None


def key_problems(rules: Rules, environ: Mapping[str, str],
                 file_has_key: Callable[[str], bool] = _file_has_key) -> list[str]:
    """One line per unset key source, naming it and the fix; [] when all are set."""
    problems = []
    for source in used_key_sources(rules):
        consequence = f"requests that use it will be answered 401 {MISSING_CODE}"
        if source.startswith(FILE_PREFIX):
            path = source.removeprefix(FILE_PREFIX)
            if not file_has_key(path):
                problems.append(f"the Bastion key file {path} is unreadable or empty: "
                                f"{consequence}; write the key into it")
            continue
        if environ.get(source, "").strip():
            continue
        line = f"{source} is not set: {consequence}; export it in the proxy's environment"
        near = near_name(source, environ)
        if near:
            line += f" ({near} is set: a misspelling of {source}?)"
        problems.append(line)
    return problems
