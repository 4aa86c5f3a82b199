"""Sidecar defaults on the trust boundary: loopback listener, Secret-file keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bastion_edge.config.rules import parse_rules
from bastion_edge.deploy.exposure import exposure_problem
from bastion_edge.deploy.sidecar import SidecarConfig

EXAMPLES = Path(__file__).resolve().parents[3] / "sidecar" / "examples"


def test_the_sidecar_listens_on_loopback_unless_told_otherwise() -> None:
    config = SidecarConfig.from_environ({})
    assert config.listen_host == "127.0.0.1"
    assert exposure_problem(parse_rules(""), config.listen_host, config.modes) is None
    assert "--allow-unauthenticated" not in config.run_argv()
    opted_out = SidecarConfig.from_environ(
        {"BASTION_LISTEN_HOST": "0.0.0.0", "BASTION_ALLOW_UNAUTHENTICATED": "true"})
    assert "--allow-unauthenticated" in opted_out.run_argv()


def test_compose_app_shares_the_sidecars_network_namespace() -> None:
    services = yaml.safe_load((EXAMPLES / "docker-compose.yaml").read_text())["services"]
    assert services["app"]["network_mode"] == "service:bastion-edge"
    assert services["app"]["environment"]["HTTPS_PROXY"].startswith("http://localhost:")
    assert "BASTION_LISTEN_HOST" not in services["bastion-edge"]["environment"]  # default


def test_kubernetes_example_reads_the_key_from_a_secret_file() -> None:
    documents: list[dict[str, Any]] = list(
        yaml.safe_load_all((EXAMPLES / "kubernetes.yaml").read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    rules = parse_rules(config_map["data"]["rules.yaml"])
    assert rules.key_file is not None
    spec = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    sidecar = spec["initContainers"][0]
    assert "QUBITTRON_API_KEY" not in {e["name"] for e in sidecar["env"]}
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    secret_volume = next(v for v in spec["volumes"] if "secret" in v)
    assert rules.key_file.startswith(mounts[secret_volume["name"]] + "/")
