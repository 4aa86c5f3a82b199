"""Development and rehearsal tooling (`bastion-edge demo`, local sandbox + proxy runs).

Never imported on the proxy's runtime path.
"""
