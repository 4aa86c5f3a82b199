#!/usr/bin/env python3
"""The image's HEALTHCHECK: /readyz on the metrics port the sidecar was given
(BASTION_METRICS_HOST/BASTION_METRICS_PORT), exit 0 when it answers 200: the proxy
accepts requests (not yet while starting, no longer while draining on SIGTERM)."""

import os
import sys
import urllib.request

from bastion_edge.deploy.sidecar import SidecarConfig, health_url

if __name__ == "__main__":
    url = health_url(SidecarConfig.from_environ(os.environ))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(url, timeout=2) as reply:
            sys.exit(0 if reply.status == 200 else 1)
    except OSError as e:
        print(f"{url}: {e}", file=sys.stderr)
        sys.exit(1)
