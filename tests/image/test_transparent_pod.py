"""The transparent form in a pod: the image as the init container (`bastion-edge redirect
install`, root with NET_ADMIN and nothing else), the sidecar in transparent mode, and an app
with no HTTPS_PROXY at all, only the exported CA bundle."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pods import IMAGE, Pod, podman_result
from stack import BASTION_KEY, Stack

pytestmark = pytest.mark.timeout(900)  # the first `make image` of a machine builds a base

# api.openai.com is an address on the pod's own loopback device, outside 127.0.0.0/8 (which
# the rules never redirect): without the redirect the app's connection is refused in the
# pod; nothing leaves it either way.
API_ADDR = "10.200.0.1"


@pytest.fixture(scope="module")
def transparent(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Stack]:
    pod = Pod()
    try:
        stack = Stack(tmp_path_factory.mktemp("transparent"), pod)
        hosts = stack.root / "hosts"  # a pod without a network takes no --add-host
        hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n{API_ADDR} api.openai.com\n")
        stack.start_sandbox()  # starts the pod's infra container: its netns exists now
        pod.netns_run("ip", "addr", "add", f"{API_ADDR}/32", "dev", "lo")
        pod.run("redirect", ["redirect", "install", "--proxy-port", "8081",
                             "--proxy-uid", "10001"], detach=False, options=[
            "--entrypoint", "bastion-edge", "--user", "0", "--cap-drop=all",
            "--cap-add=NET_ADMIN"])
        stack.start_sidecar({"BASTION_MODE": "regular,transparent@8081"})
        stack.start_app({"SSL_CERT_FILE": "/shared/ca-bundle.pem"},  # trust only
                        mounts=[f"{hosts}:/etc/hosts:ro"])
        yield stack
    finally:
        pod.remove()


def test_init_container_needs_net_admin(transparent: Stack) -> None:
    refused = podman_result("run", "--rm", "--pod", transparent.pod.name, "--user", "0",
                            "--cap-drop=all", "--entrypoint", "bastion-edge", IMAGE,
                            "redirect", "install", "--proxy-port", "8081",
                            "--proxy-uid", "10001")
    assert refused.returncode != 0  # without NET_ADMIN iptables may not touch the netns


def test_app_without_proxy_settings_is_moved_to_bastion(transparent: Stack) -> None:
    done = transparent.chat("hello from an app that knows no proxy")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gpt-oss-120b"
    entry = next(e for e in transparent.journal()
                 if "an app that knows no proxy" in (e["body"] or ""))
    assert entry["headers"]["authorization"] == f"Bearer {BASTION_KEY}"
    assert "sk-" not in str(entry["headers"])

