#!/usr/bin/env python3
"""Container entrypoint: everything comes from the environment (see bastion_edge.sidecar)."""

from bastion_edge.sidecar import main

if __name__ == "__main__":
    raise SystemExit(main())
