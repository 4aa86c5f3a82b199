"""`python -m bastion_sandbox [--host H] [--port P] [--tls-dir DIR] ...`"""

from __future__ import annotations

import argparse
from pathlib import Path

from bastion_sandbox.config import RIVA_AUDIO_MODES, SandboxConfig, default_tls_dir
from bastion_sandbox.server import run_sandbox


def parse_args(argv: list[str] | None = None) -> SandboxConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bastion_sandbox", description="Local stand-in for Bastion."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (0: any free)")
    parser.add_argument("--tls-dir", type=Path, default=default_tls_dir())
    parser.add_argument("--http-port", type=int, default=None, help="HTTP->HTTPS redirector")
    parser.add_argument(
        "--api-key", action="append", default=[], help="accepted key (repeat; default: any)"
    )
    parser.add_argument("--riva-audio", choices=RIVA_AUDIO_MODES, default="wav")
    parser.add_argument("--journal-size", type=int, default=1000)
    parser.add_argument("--persona", choices=("bastion", "openai"), default="bastion")
    args = parser.parse_args(argv)
    try:
        return SandboxConfig(
            host=args.host,
            port=args.port,
            tls_dir=args.tls_dir,
            http_port=args.http_port,
            api_keys=frozenset(args.api_key),
            riva_audio=args.riva_audio,
            journal_size=args.journal_size,
            persona=args.persona,
        )
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    run_sandbox(parse_args())
