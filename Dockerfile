# bastion-edge sidecar image, built with the same `make install` the tests use.
#   make image                      (docker or podman, whichever is present)
#   make image BASE_IMAGE=...       another Python >= 3.12 base with the same layout
# Behind an intercepting TLS proxy, lend its CA bundle to pip for the build only (a build
# secret: never a layer of the image): `make image BUILD_CA=/etc/ssl/certs/ca-certificates.crt`.
ARG BASE_IMAGE=python:3.13-slim

# ---- build: make + pip, thrown away with their caches
FROM ${BASE_IMAGE} AS build
WORKDIR /app
COPY scripts/system-deps scripts/image-slim ./scripts/
RUN scripts/system-deps image-build
COPY pyproject.toml README.md Makefile rules.yaml ./
COPY addon ./addon
COPY sidecar ./sidecar
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
 && make install \
 && scripts/image-slim /app/.venv

# ---- the image: the base, iptables, the venv and the code
FROM ${BASE_IMAGE}
WORKDIR /app
# iptables: the same image serves as the transparent-mode init container
# (`bastion-edge redirect install`, see docs/how-to/transparent.md).
COPY scripts/system-deps ./scripts/
RUN scripts/system-deps image \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
COPY --from=build /app /app

RUN useradd --uid 10001 --create-home bastion \
 && mkdir -p /data /shared /etc/bastion-edge \
 && cp /app/rules.yaml /etc/bastion-edge/rules.yaml \
 && chown -R bastion /data /shared
USER 10001
ENV PATH=/app/.venv/bin:$PATH \
    BASTION_CONFDIR=/data \
    BASTION_EXPORT_DIR=/shared \
    BASTION_RULES=/etc/bastion-edge/rules.yaml
VOLUME ["/data", "/shared"]

# 8080: the proxy; 9090: /metrics, /healthz, /readyz (BASTION_METRICS_PORT moves it, and
# the health check follows).
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["python", "/app/sidecar/healthcheck.py"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/app/sidecar/entrypoint.py"]
