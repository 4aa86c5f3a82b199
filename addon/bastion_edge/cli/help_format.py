"""`--help` shows every flag's default: argparse's defaults formatter, minus the noise.

A flag's default is appended as `(default: X)` (`none` for an unset one) unless its
help already says it in words ("default: $BASTION_RULES, else ...").
Every `bastion-edge` parser, subcommands included, is a `Parser` and formats this way.
"""

from __future__ import annotations

import argparse
from typing import Any


class DefaultsShown(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or action.required or default is argparse.SUPPRESS
                or isinstance(default, bool) or "default" in text.lower()):
            return text
        shown = "none" if default in (None, "", []) else "%(default)s"
        return f"{text} (default: {shown})".strip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; its subparsers are Parsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("formatter_class") or DefaultsShown
        if not issubclass(given, DefaultsShown):  # e.g. a raw description: keep it too
            given = type(f"DefaultsShown{given.__name__}", (DefaultsShown, given), {})
        kwargs["formatter_class"] = given
        super().__init__(*args, **kwargs)
