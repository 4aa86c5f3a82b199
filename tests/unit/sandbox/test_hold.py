"""`/sandbox/hold`: requests wait at the sandbox's door until the test lets them in."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from sandbox_support import AUTH, client_for, run_sandbox_thread

from bastion_edge.rehearsal.localrun import wait_until
from bastion_sandbox import RunningSandbox

EMBED = {"model": "bge-m3", "input": "hold me"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    yield from run_sandbox_thread(tmp_path_factory.mktemp("tls"))


@pytest.fixture()
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with client_for(sandbox, headers=AUTH) as c:
        yield c
        c.delete("/sandbox/hold")


def journalled(client: httpx.Client) -> int:
    return sum(1 for e in client.get("/sandbox/journal").json() if e["path"] == "/v1/embeddings")


def test_requests_past_the_allowance_wait_until_let_in_one_by_one(
        client: httpx.Client, sandbox: RunningSandbox) -> None:
    client.delete("/sandbox/journal")
    assert client.put("/sandbox/hold", json={"path": "/v1/embeddings", "pass": 1}).json() == {
        "path": "/v1/embeddings", "allowed": 1, "passed": 0, "waiting": 0}
    assert client.post("/v1/embeddings", json=EMBED).status_code == 200
    with ThreadPoolExecutor(2) as pool, client_for(sandbox, headers=AUTH) as other:
        first: Future[httpx.Response] = pool.submit(other.post, "/v1/embeddings", json=EMBED)
        wait_until(lambda: client.get("/sandbox/hold").json()["waiting"] == 1,
                   what="one waiting")
        assert not first.done() and journalled(client) == 1  # held: not yet seen inside
        assert client.post("/v1/chat/completions", json={  # other paths are not held
            "model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]},
        ).status_code == 200
        client.post("/sandbox/hold/pass")
        assert first.result(timeout=10).status_code == 200
        assert client.get("/sandbox/hold").json() == {
            "path": "/v1/embeddings", "allowed": 2, "passed": 2, "waiting": 0}


def test_lifting_the_hold_lets_every_waiting_request_in(
        client: httpx.Client, sandbox: RunningSandbox) -> None:
    client.put("/sandbox/hold", json={"path": "/v1/embeddings"})
    with ThreadPoolExecutor(3) as pool, client_for(sandbox, headers=AUTH) as other:
        waiting = [pool.submit(other.post, "/v1/embeddings", json=EMBED) for _ in range(3)]
        wait_until(lambda: client.get("/sandbox/hold").json()["waiting"] == 3,
                   what="three waiting")
        assert client.delete("/sandbox/hold").json()["path"] is None
        assert [f.result(timeout=10).status_code for f in waiting] == [200] * 3
    assert client.post("/v1/embeddings", json=EMBED).status_code == 200


@pytest.mark.parametrize("body", [{}, {"path": "v1"}, {"path": "/sandbox/hold"},
                                  {"path": "/v1/x", "pass": -1},
                                  {"path": "/v1/x", "pass": True}, ["/v1/x"]])
def test_a_bad_hold_is_400(client: httpx.Client, body: object) -> None:
    reply = client.put("/sandbox/hold", json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_sandbox_hold"
    assert client.get("/sandbox/hold").json()["path"] is None
