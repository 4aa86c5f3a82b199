# bastion-edge sidecar image. Built with the same `make install` the tests use.
FROM python:3.12-slim

WORKDIR /app
# iptables: the same image serves as the transparent-mode init container
# (`bastion-edge redirect install`, see "Transparent interception" in the README).
# Installed by the same script `make test` runs (its `image` list: make, iptables).
COPY scripts/system-deps ./scripts/
RUN scripts/system-deps image && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md Makefile rules.yaml ./
COPY addon ./addon
COPY sidecar ./sidecar
RUN make install

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

# 8080: the proxy; 9090: /metrics, /healthz, /readyz
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz')"

STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/app/sidecar/entrypoint.py"]
