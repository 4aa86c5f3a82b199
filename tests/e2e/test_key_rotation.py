"""A Bastion key from a file (a Kubernetes Secret mount), rotated under load.

"Within 3 s" is the key-file poll interval's promise (`KeyFiles.interval`, checked
below as a value); the run itself is asserted by what is observed, never by elapsed
time: the new key arrives, no request fails, no request goes back to the old key.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import httpx
from harness import APP_KEY, REPO, Sandbox, proxy_env, start_proxy, wait_until
from trust_support import headers_of

from bastion_edge.config.key_files import KeyFiles

OLD_KEY, NEW_KEY = "bastion-file-key-old-19af", "bastion-file-key-new-7c30"


def write_secret(volume: Path, key: str, stamp: str) -> None:
    """What the kubelet does: a new timestamped dir, then `..data` swapped atomically."""
    (volume / stamp).mkdir(parents=True)
    (volume / stamp / "key").write_text(key + "\n")
    (volume / "..data_tmp").symlink_to(stamp)
    os.replace(volume / "..data_tmp", volume / "..data")
    if not (volume / "key").is_symlink():
        (volume / "key").symlink_to("..data/key")


def test_key_file_rotated_under_load_is_used_without_a_failure(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    volume = tmp_path / "secret"
    write_secret(volume, OLD_KEY, "..2026_11_30_01")
    rules = tmp_path / "rules.yaml"
    rules.write_text(re.sub(r"(?m)^  default_env: QUBITTRON_API_KEY\b",
                            f"  default_file: {volume / 'key'}",
                            (REPO / "rules.yaml").read_text()))
    proxy = start_proxy(tmp_path, proxy_env(sandbox, QUBITTRON_API_KEY=None), rules)
    sandbox.clear_journal()
    outcomes: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(proxy=proxy.url, verify=proxy.app_env()["SSL_CERT_FILE"],
                          timeout=20) as client:
            while not stop.is_set():
                try:
                    outcomes.append(client.post(
                        "https://api.openai.com/v1/embeddings",
                        headers={"authorization": f"Bearer {APP_KEY}"},
                        json={"model": "text-embedding-3-small", "input": "x"}).status_code)
                except httpx.HTTPError as e:
                    outcomes.append(repr(e))

    def keys_seen() -> list[str]:
        return [headers_of(e)["authorization"] for e in sandbox.journal()
                if e["path"] == "/v1/embeddings"]

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: keys_seen().count(f"Bearer {OLD_KEY}") >= 5, what="load on old key")
        write_secret(volume, NEW_KEY, "..2026_11_30_02")
        wait_until(lambda: f"Bearer {NEW_KEY}" in keys_seen(), timeout=60, what="new key")
        seen_new = len(outcomes)
        wait_until(lambda: len(outcomes) >= seen_new + 20, what="load after the swap")
    finally:
        stop.set()
        worker.join(30)
    print(f"{len(outcomes)} requests under load")
    assert [o for o in outcomes if o != 200] == []
    seen = keys_seen()
    first_new = seen.index(f"Bearer {NEW_KEY}")
    assert set(seen[first_new:]) == {f"Bearer {NEW_KEY}"}  # no going back
    metrics = proxy.metrics()
    assert f'result="changed",source="file:{volume / "key"}"}} 1.0' in metrics
    assert NEW_KEY not in metrics
    assert proxy.process.stop() == 0
    assert KeyFiles().interval < 3.0  # the next poll, at most this far off, sees a swap
    log = proxy.process.log()  # stdout is flushed at exit
    assert f"key file {volume / 'key'} changed" in log
    assert OLD_KEY not in log and NEW_KEY not in log
