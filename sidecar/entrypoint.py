#!/usr/bin/env python3
"""Container entrypoint: everything comes from the environment (see bastion_edge.deploy.sidecar)."""

from bastion_edge.deploy.sidecar import main

if __name__ == "__main__":
    raise SystemExit(main())
