"""`bastion-edge report ACCESS_LOG [--html OUT.html] [--since ISO] [--until ISO]
[--rules rules.yaml]`."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from bastion_edge.config.rules import Rules, RulesError, load_rules
from bastion_edge.config.usage_rules import UsageRules
from bastion_edge.report.load import load_log, parse_time


def _iso(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2025-06-01T14:30:00Z)") from None


def rules_from(explicit: str | None) -> Rules | None:
    """The rules file: --rules, else $BASTION_RULES, else ./rules.yaml if present; None
    when there is none (no prices, no quotas)."""
    path = explicit or os.environ.get("BASTION_RULES") or "rules.yaml"
    if explicit is None and not Path(path).is_file():
        return None
    return load_rules(path)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `report` subcommand to the main parser's subparsers."""
    report = subparsers.add_parser(
        "report", help="cutover report and per-app quota use from an access log: terminal "
                       "table and HTML page",
        description="Per endpoint and model, by destination (Bastion, OpenAI, mirror copies): "
                    "requests, error rate, p50/p95 latency and time to first byte, "
                    "mirror agreement, tokens; with a rules file, estimated cost and each "
                    "app's use against its quota (busiest minute and day, refusals).")
    report.add_argument("access_log", metavar="ACCESS_LOG",
                        help="JSON-lines access log written by `run --access-log` ('-': stdin)")
    report.add_argument("--html", metavar="OUT.html", default=None,
                        help="also write a self-contained HTML page with charts")
    report.add_argument("--since", type=_iso, default=None, metavar="ISO",
                        help="only exchanges that started at or after this time (UTC if no zone)")
    report.add_argument("--until", type=_iso, default=None, metavar="ISO",
                        help="only exchanges that started before this time")
    report.add_argument("--rules", default=None, metavar="rules.yaml",
                        help="rules file whose usage.prices (per million tokens) give the "
                             "estimated cost and saving, and whose clients' quotas the "
                             "apps' use is shown against (default: $BASTION_RULES, else "
                             "./rules.yaml when it exists)")
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bastion_edge.report.html import render as render_html
    from bastion_edge.report.stats import build_report
    from bastion_edge.report.terminal import render as render_text

    if args.since and args.until and args.since >= args.until:
        print("bastion-edge report: --since must be before --until", file=sys.stderr)
        return 2
    try:
        loaded = load_log(args.access_log, args.since, args.until)
    except OSError as e:
        print(f"bastion-edge report: {args.access_log}: {e.strerror or e}", file=sys.stderr)
        return 1
    try:
        rules = rules_from(args.rules)
    except (RulesError, OSError) as e:
        print(f"bastion-edge report: rules: {e}", file=sys.stderr)
        return 1
    usage = rules.usage if rules is not None else UsageRules()
    report = build_report(loaded, usage.prices, usage.currency,
                          rules.clients if rules is not None else None)
    try:
        sys.stdout.write(render_text(report))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.html:
        out = Path(args.html)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(render_html(report), encoding="utf-8")
            tmp.replace(out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            print(f"bastion-edge report: {out}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"HTML report: {out.resolve()}", file=sys.stderr)
    return 0
