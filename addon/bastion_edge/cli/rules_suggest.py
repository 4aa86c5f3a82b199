"""`bastion-edge rules suggest ACCESS_LOG [--rules R]`: a `models:` section for every
OpenAI id the log saw; exit 1 when the current rules leave a seen id unmapped."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bastion_edge.config.rules import Rules, RulesError, load_rules
from bastion_edge.core.model_suggest import collect, render, unmapped


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = subparsers.add_parser("rules", help="rules from what the traffic did")
    sub = rules.add_subparsers(dest="rules_command", required=True)
    suggest = sub.add_parser(
        "suggest", help="a models: section for every OpenAI id in an access log",
        description="Maps every OpenAI id seen in the access log (with its count and the "
                    "capabilities its requests used: tools, vision, json_schema; these need "
                    "`run --access-log-bodies`) to a Bastion model of its class. Exits 1 "
                    "when the current rules leave a seen id unmapped.")
    suggest.add_argument("access_log", metavar="ACCESS_LOG", help="'-': stdin")
    suggest.add_argument("--rules", default=None, metavar="rules.yaml",
                         help="the current rules (default: $BASTION_RULES, else ./rules.yaml "
                              "when it exists); their capabilities refine the suggestion")
    suggest.set_defaults(handler=run)


def _records(path: str) -> Iterator[dict[str, Any]]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        for line in stream:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value
    finally:
        if stream is not sys.stdin:
            stream.close()


def _current(explicit: str | None) -> Rules | None:
    path = explicit or os.environ.get("BASTION_RULES") or "rules.yaml"
    if explicit is None and not Path(path).is_file():
        return None
    return load_rules(path)


def run(args: argparse.Namespace) -> int:
    try:
        rules = _current(args.rules)
    except (RulesError, OSError) as e:
        print(f"bastion-edge rules suggest: rules: {e}", file=sys.stderr)
        return 2
    try:
        seen = collect(_records(args.access_log))
    except OSError as e:
        print(f"bastion-edge rules suggest: {args.access_log}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    sys.stdout.write(render(seen, rules.capabilities if rules else {}, args.access_log))
    if rules is None:
        print("no current rules given: nothing to compare", file=sys.stderr)
        return 0
    missing = unmapped(seen, rules.models)
    if missing:
        print(f"{rules.source} leaves {len(missing)} seen id(s) unmapped: "
              + ", ".join(missing), file=sys.stderr)
        return 1
    print(f"{rules.source} maps every seen id", file=sys.stderr)
    return 0
