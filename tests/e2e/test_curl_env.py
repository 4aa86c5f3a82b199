"""curl configured only by `eval "$(bastion-edge env)"`, on an image that pre-sets
CURL_CA_BUNDLE (curl prefers it over SSL_CERT_FILE) and with upper-case HTTPS_PROXY."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trustme
from harness import APP_KEY, BASTION_EDGE, Proxy

SCRIPT = """\
export CURL_CA_BUNDLE="$WRONG_BUNDLE"     # as many images ship it
eval "$("$BASTION_EDGE" env --confdir "$CONFDIR" --listen-port "$PORT" 2>/dev/null)"
{drop}
curl -sS --fail-with-body https://api.openai.com/v1/embeddings \\
  -H "Authorization: Bearer $APP_KEY" -H 'content-type: application/json' \\
  -d '{{"model": "text-embedding-3-small", "input": "curl"}}'
"""


def _curl_in_shell(
    proxy: Proxy, tmp_path: Path, drop: str = ""
) -> subprocess.CompletedProcess[str]:
    wrong = tmp_path / "unrelated-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WRONG_BUNDLE": str(wrong),
           "BASTION_EDGE": BASTION_EDGE, "CONFDIR": str(proxy.confdir),
           "PORT": str(proxy.port), "APP_KEY": APP_KEY}
    return subprocess.run(["bash", "-c", SCRIPT.format(drop=drop)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_curl_with_preset_wrong_ca_bundle_works_after_env(proxy: Proxy, tmp_path: Path) -> None:
    done = _curl_in_shell(proxy, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    reply = json.loads(done.stdout)
    assert reply["model"] == "bge-m3"


def test_without_curl_ca_bundle_line_the_preset_bundle_breaks_curl(
    proxy: Proxy, tmp_path: Path
) -> None:
    """The control: what users saw before `env` exported CURL_CA_BUNDLE."""
    done = _curl_in_shell(proxy, tmp_path, drop='export CURL_CA_BUNDLE="$WRONG_BUNDLE"')
    assert done.returncode == 60, done.stdout + done.stderr  # peer certificate not trusted
