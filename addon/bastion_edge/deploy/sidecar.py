"""The container entrypoint: configured from the environment only.

It makes sure the CA exists in the confdir volume, exports what the app container
needs to a shared directory (the public CA, a combined trust bundle and an env file
with the lines `bastion-edge env` prints, pointing at the paths the app sees), then
runs `bastion-edge run` in the foreground. SIGTERM drains in-flight requests for
BASTION_SHUTDOWN_GRACE seconds before exiting.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion_edge.deploy.app_env import EXPORTED_ENV_VAR, app_environment
from bastion_edge.deploy.tls_bundles import PROXY_CA_CERT, client_bundle

# Every variable the entrypoint reads, with its default. The examples in
# sidecar/examples/ are tested against this table.
ENV_VARS: dict[str, str] = {
    # Containers of a pod (or a compose service with `network_mode: service:`) share
    # the network namespace: loopback is enough, and nothing else may spend the key.
    "BASTION_LISTEN_HOST": "127.0.0.1",
    "BASTION_LISTEN_PORT": "8080",
    # Kubelet probes and Prometheus come from outside the pod: the metrics port listens
    # on every interface. It serves only /metrics, /healthz and /readyz (no proxying,
    # no keys, bounded labels) and the egress policy keeps apps from tunnelling to it.
    "BASTION_METRICS_HOST": "0.0.0.0",
    "BASTION_METRICS_PORT": "9090",
    "BASTION_RULES": "/etc/bastion-edge/rules.yaml",
    "BASTION_CONFDIR": "/data",
    "BASTION_EXPORT_DIR": "/shared",
    "BASTION_APP_CA_DIR": "",  # where the app mounts the export dir; default: same path
    "BASTION_PROXY_HOST": "localhost",  # how the app reaches the proxy (pod: localhost)
    "BASTION_MODE": "regular",  # comma-separated mitmproxy modes, e.g. regular,transparent@8081
    "BASTION_ACCESS_LOG": "-",
    "BASTION_SHUTDOWN_GRACE": "20",
    "BASTION_WEB": "false",
    "BASTION_ALLOW_UNAUTHENTICATED": "false",  # listen beyond loopback with no apps declared
    "BASTION_WORKERS": "1",  # proxy processes sharing the port (0: one per core)
    "BASTION_LISTEN_BACKLOG": "0",  # accept queue (0: asyncio's 100; 1024 with workers)
    # Read by the proxy itself (docs/reference/environment.md): QUBITTRON_API_KEY, BASTION_BASE_URL,
    # BASTION_UPSTREAM_CA, BASTION_OPENAI_URL and any key variables the rules name.
}
EXPORTED_CA = "bastion-edge-ca.pem"
EXPORTED_BUNDLE = "ca-bundle.pem"
EXPORTED_ENV = "app.env"


@dataclass(frozen=True)
class SidecarConfig:
    listen_host: str
    listen_port: int
    metrics_host: str
    metrics_port: int
    rules: Path
    confdir: Path
    export_dir: Path | None
    app_ca_dir: Path | None
    proxy_host: str
    modes: list[str]
    access_log: str
    shutdown_grace: float
    web: bool
    allow_unauthenticated: bool = False
    workers: int = 1
    listen_backlog: int = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SidecarConfig:
        def get(name: str) -> str:
            return environ.get(name) or ENV_VARS[name]

        rules = Path(get("BASTION_RULES"))
        if not rules.exists() and Path("/app/rules.yaml").exists():
            rules = Path("/app/rules.yaml")  # the image's shipped default
        export = get("BASTION_EXPORT_DIR")
        return cls(
            listen_host=get("BASTION_LISTEN_HOST"),
            listen_port=int(get("BASTION_LISTEN_PORT")),
            metrics_host=get("BASTION_METRICS_HOST"),
            metrics_port=int(get("BASTION_METRICS_PORT")),
            rules=rules,
            confdir=Path(get("BASTION_CONFDIR")),
            export_dir=Path(export) if export else None,
            app_ca_dir=Path(get("BASTION_APP_CA_DIR") or export) if export else None,
            proxy_host=get("BASTION_PROXY_HOST"),
            modes=[m.strip() for m in get("BASTION_MODE").split(",") if m.strip()],
            access_log=get("BASTION_ACCESS_LOG"),
            shutdown_grace=float(get("BASTION_SHUTDOWN_GRACE")),
            web=get("BASTION_WEB").lower() in ("1", "true", "yes"),
            allow_unauthenticated=get("BASTION_ALLOW_UNAUTHENTICATED").lower()
            in ("1", "true", "yes"),
            workers=int(get("BASTION_WORKERS")),
            listen_backlog=int(get("BASTION_LISTEN_BACKLOG")),
        )

    def run_argv(self) -> list[str]:
        argv = ["run", "--listen-host", self.listen_host, "--listen-port", str(self.listen_port),
                "--metrics-host", self.metrics_host, "--metrics-port", str(self.metrics_port),
                "--rules", str(self.rules), "--confdir", str(self.confdir),
                "--access-log", self.access_log, "--shutdown-grace", str(self.shutdown_grace)]
        for mode in self.modes:
            argv += ["--mode", mode]
        if self.allow_unauthenticated:
            argv.append("--allow-unauthenticated")
        if self.workers != 1:
            argv += ["--workers", str(self.workers)]
        if self.listen_backlog:
            argv += ["--listen-backlog", str(self.listen_backlog)]
        return argv + (["--web"] if self.web else [])


def export_for_app(config: SidecarConfig) -> Path | None:
    """Write the CA, the trust bundle and app.env into the shared directory."""
    from bastion_edge.deploy.tls_bundles import ensure_ca

    ca = ensure_ca(config.confdir)
    if config.export_dir is None or config.app_ca_dir is None:
        return None
    config.export_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, config.export_dir / EXPORTED_CA)
    shutil.copyfile(client_bundle(config.confdir), config.export_dir / EXPORTED_BUNDLE)
    for name in (EXPORTED_CA, EXPORTED_BUNDLE):
        (config.export_dir / name).chmod(0o644)
    proxy = f"http://{config.proxy_host}:{config.listen_port}"
    lines = app_environment(proxy, config.app_ca_dir / EXPORTED_BUNDLE,
                            config.app_ca_dir / EXPORTED_CA)
    env_file = config.export_dir / EXPORTED_ENV
    env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    env_file.chmod(0o644)
    return env_file


def health_url(config: SidecarConfig) -> str:
    """What the image's HEALTHCHECK asks: /readyz on the metrics port the sidecar uses
    (healthy = the proxy accepts requests, what compose's `service_healthy` waits for)."""
    host = config.metrics_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # every interface: loopback is one of them
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.metrics_port}/readyz"


def main(environ: Mapping[str, str] | None = None) -> int:
    from bastion_edge.cli.main import main as cli_main

    config = SidecarConfig.from_environ(os.environ if environ is None else environ)
    exported = export_for_app(config)
    print(f"bastion-edge sidecar: CA {config.confdir / PROXY_CA_CERT}", flush=True)
    if exported is not None and config.app_ca_dir is not None:
        print(f"bastion-edge sidecar: app environment written to {exported} (the app mounts "
              f"it at {config.app_ca_dir / EXPORTED_ENV}); the proxy's log shows it below",
              flush=True)
        os.environ[EXPORTED_ENV_VAR] = str(exported)  # `run` announces the app's view
    return cli_main(config.run_argv())
