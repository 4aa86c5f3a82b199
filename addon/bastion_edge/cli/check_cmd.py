"""`bastion-edge check`: validate a rules file, print the effective table, name every
unset Bastion key source (exit 1 unless --rules-only), and with --live ask Bastion."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from bastion_edge.cli.cutover_cmd import describe_cutover
from bastion_edge.cli.key_advice import key_problems
from bastion_edge.cli.rules_file import rules_path
from bastion_edge.config.rules import Rules, RulesError, apply_environment, load_rules


def cmd_check(args: argparse.Namespace) -> int:
    path = rules_path(args.rules)
    try:
        rules = apply_environment(load_rules(path), os.environ)
    except (RulesError, OSError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    print(describe_rules(rules, os.environ))
    print(_check_extras(rules))
    status = 0
    if not args.rules_only:
        for problem in key_problems(rules, os.environ):
            print(f"bastion-edge check: {problem}", file=sys.stderr)
            status = 1
    if args.live:
        from bastion_edge.cli.live_check import live_check

        confdir = Path(os.path.expanduser(args.confdir))
        confdir.mkdir(parents=True, exist_ok=True)
        live_status, report = asyncio.run(
            live_check(rules, os.environ, confdir, describe_condition))
        print("\n" + report)
        status = max(status, live_status)
    return status


def _check_extras(rules: Rules) -> str:
    """Which known OpenAI ids each glob covers; embedding mappings that change size."""
    from bastion_edge.core.embedding_dims import size_change_warnings
    from bastion_edge.core.known_models import coverage_report, known_openai_ids

    mapping = [(rule.pattern, [choice.use for choice in rule.choices]) for rule in rules.models]
    warnings = size_change_warnings(mapping, rules.embedding_dimensions)
    return "\n".join(["", coverage_report(rules.models, known_openai_ids()), *warnings])


def describe_rules(rules: Rules, environ: os._Environ[str] | dict[str, str]) -> str:
    """The effective configuration as a human-readable table (never key values)."""
    lines = [
        f"rules: {rules.source} (sha256 {rules.sha256[:12]})",
        f"upstream: {rules.upstream.base_url}"
        + (f" (CA {rules.upstream.ca_file})" if rules.upstream.ca_file else ""),
        f"intercepted: openai={', '.join(rules.openai_hosts)}  "
        f"bastion={', '.join(rules.bastion_hosts)}",
        f"unmapped models: {rules.unmapped_models}   reply model: {rules.reply_model}",
        *describe_cutover(rules),
        "",
        f"{'OpenAI model':<28} {'when':<44} Bastion model",
        f"{'-' * 28} {'-' * 44} {'-' * 30}",
    ]
    for rule in rules.models:
        for i, choice in enumerate(rule.choices):
            name = rule.pattern if i == 0 else ""
            lines.append(f"{name:<28} {describe_condition(choice.when):<44} {choice.use}")
    lines += ["", "keys:"]
    if rules.key_file:
        status = "readable" if os.access(rules.key_file, os.R_OK) else "NOT READABLE"
        lines.append(f"  default: file {rules.key_file} ({status})")
    else:
        status = "set" if environ.get(rules.key_env) else "NOT SET"
        lines.append(f"  default: ${rules.key_env} ({status})")
    for key_rule in rules.key_rules:
        status = "set" if environ.get(key_rule.env) else "NOT SET"
        lines.append(f"  when {describe_condition(key_rule.when)}: ${key_rule.env} ({status})")
    if rules.clients.apps:
        lines += ["", "apps (proxy credentials required):"]
        for app in rules.clients.apps:
            key = (f"file {app.bastion_key_file}" if app.bastion_key_file else
                   f"${app.bastion_key_env}" if app.bastion_key_env else "by keys rules")
            lines.append(f"  {app.name:<20} key: {key}")
        if rules.clients.transparent_app:
            lines.append(f"  transparent listeners: {rules.clients.transparent_app}")
    if rules.egress.allow:
        lines.append("egress exceptions: " + ", ".join(a.text for a in rules.egress.allow))
    if rules.tts.voices:
        lines += ["", f"tts: {rules.tts.path}  default voice {rules.tts.default_voice}"]
        lines += [f"  {k:<10} -> {v}" for k, v in rules.tts.voices.items()]
    return "\n".join(lines)


def describe_condition(condition: Any) -> str:
    parts = []
    if condition.endpoints:
        parts.append("endpoint=" + "|".join(condition.endpoints))
    if condition.has_image is not None:
        parts.append(f"has_image={str(condition.has_image).lower()}")
    if condition.prompt_tokens_over is not None:
        parts.append(f"prompt_tokens>{condition.prompt_tokens_over}")
    parts += [f"header {k}={v}" for k, v in condition.headers]
    if condition.app_key_sha256:
        parts.append("app_key_sha256=" + "|".join(condition.app_key_sha256))
    if condition.clients:
        parts.append("client=" + "|".join(str(n) for n in condition.clients))
    if condition.apps:
        parts.append("app=" + "|".join(condition.apps))
    return ", ".join(parts) or "(always)"

