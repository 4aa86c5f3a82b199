"""sidecar/examples/kubernetes-gateway.yaml references what the entrypoint and the proxy
read: its variables, its rules (apps, Redis), the CA files mitmproxy loads from the
confdir, and Service, HPA and PDB aimed at the Deployment's pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bastion_edge.config.rules import parse_rules
from bastion_edge.deploy.exposure import exposure_problem
from bastion_edge.deploy.sidecar import ENV_VARS, SidecarConfig
from bastion_edge.deploy.tls_bundles import PROXY_CA_CERT

GATEWAY = Path(__file__).resolve().parents[3] / "sidecar" / "examples" / "kubernetes-gateway.yaml"


def documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(GATEWAY.read_text()))


def one(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def gateway_container() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    deployment = one("Deployment", "bastion-edge-gateway")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    return deployment, container, env


def test_the_gateway_is_configured_only_by_variables_the_entrypoint_reads() -> None:
    _, container, env = gateway_container()
    assert set(env) <= set(ENV_VARS)
    config = SidecarConfig.from_environ(env)
    assert config.workers == 2 and config.listen_backlog == 1024
    argv = config.run_argv()
    assert argv[argv.index("--workers") + 1] == "2"
    cpu = container["resources"]["requests"]["cpu"]
    assert int(cpu) == config.workers  # one worker per requested core
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"proxy": config.listen_port, "metrics": config.metrics_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz",
                                                      "port": config.metrics_port}


def test_rules_declare_apps_and_share_responses_in_the_redis_service() -> None:
    _, container, env = gateway_container()
    rules_dir, rules_file = env["BASTION_RULES"].rsplit("/", 1)
    config_map = one("ConfigMap", "bastion-edge-gateway-rules")
    rules = parse_rules(config_map["data"][rules_file])
    assert rules.clients.apps  # apps authenticate: listening on 0.0.0.0 is allowed
    assert exposure_problem(rules, env["BASTION_LISTEN_HOST"], ["regular"]) is None
    store = urlsplit(rules.responses_state.store)
    assert store.scheme == "redis"
    redis = one("Service", store.hostname or "")
    assert redis["spec"]["ports"][0]["port"] == store.port
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[rules_dir]["name"] == "rules"


def test_every_replica_loads_the_one_ca_from_the_secret() -> None:
    deployment, container, env = gateway_container()
    confdir = env["BASTION_CONFDIR"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for name in ("mitmproxy-ca.pem", PROXY_CA_CERT):  # what mitmproxy's CertStore reads
        mount = mounts[f"{confdir}/{name}"]
        assert mount["subPath"] == name
        assert volumes[mount["name"]]["secret"]["secretName"] == "bastion-edge-ca"
    assert "emptyDir" in volumes[mounts[confdir]["name"]]  # writable: bundle, dhparam
    fs_group = deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"]
    assert fs_group == container["securityContext"]["runAsUser"]


def test_service_hpa_and_pdb_aim_at_the_gateway_pods() -> None:
    deployment, _, env = gateway_container()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "bastion-edge-gateway")
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "proxy"
    hpa = one("HorizontalPodAutoscaler", "bastion-edge-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget", "bastion-edge-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["BASTION_SHUTDOWN_GRACE"])


def test_the_app_reaches_the_service_with_credentials_and_trusts_the_ca() -> None:
    app = one("Deployment", "billing")["spec"]["template"]["spec"]
    container = app["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["HTTPS_PROXY"]["valueFrom"]  # credentials: a Secret
    bundle = env["SSL_CERT_FILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    directory, name = bundle.rsplit("/", 1)
    volume = next(v for v in app["volumes"] if v["name"] == mounts[directory])
    assert volume["configMap"]["name"] == "bastion-edge-ca-cert" and name == "ca-bundle.pem"
    names = {a.name for a in parse_rules(
        one("ConfigMap", "bastion-edge-gateway-rules")["data"]["rules.yaml"]).clients.apps}
    assert "billing" in names
