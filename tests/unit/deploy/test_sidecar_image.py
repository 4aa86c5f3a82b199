"""What the image's HEALTHCHECK asks and what the sidecar's log shows the app."""

from __future__ import annotations

from pathlib import Path

from bastion_edge.deploy.app_env import EXPORTED_ENV_VAR, exported_app_env
from bastion_edge.deploy.sidecar import ENV_VARS, SidecarConfig, health_url


def config(**env: str) -> SidecarConfig:
    return SidecarConfig.from_environ({**ENV_VARS, **env})


def test_health_check_follows_the_metrics_port_and_host() -> None:
    assert health_url(config()) == "http://127.0.0.1:9090/readyz"
    assert health_url(config(BASTION_METRICS_PORT="9191")) == "http://127.0.0.1:9191/readyz"
    assert health_url(config(BASTION_METRICS_HOST="10.1.2.3")) == "http://10.1.2.3:9090/readyz"
    assert health_url(config(BASTION_METRICS_HOST="::1")) == "http://[::1]:9090/readyz"
    assert health_url(config(BASTION_METRICS_HOST="::")) == "http://127.0.0.1:9090/readyz"


def test_the_log_shows_the_exported_app_env(tmp_path: Path) -> None:
    app_env = tmp_path / "app.env"
    app_env.write_text("HTTPS_PROXY=http://localhost:8080\n"
                       "SSL_CERT_FILE=/shared/ca-bundle.pem\nNO_PROXY=localhost,127.0.0.1\n")
    shown = exported_app_env({EXPORTED_ENV_VAR: str(app_env)})
    assert shown is not None
    lines = shown.splitlines()
    assert "export HTTPS_PROXY=http://localhost:8080" in lines
    assert "export SSL_CERT_FILE=/shared/ca-bundle.pem" in lines
    assert "export NO_PROXY=localhost,127.0.0.1" in lines
    assert "make install" not in shown


def test_outside_the_sidecar_nothing_is_exported() -> None:
    assert exported_app_env({}) is None
    assert exported_app_env({EXPORTED_ENV_VAR: "/nonexistent/app.env"}) is None
