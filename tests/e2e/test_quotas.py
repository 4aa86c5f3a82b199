"""Per-app quotas, end to end: a real `bastion-edge run` with apps that have a `quota:`,
the real openai SDK with credentials in its proxy URL, the sandbox as Bastion.

Windows are aligned on the proxy clock's minutes. Each proxy here runs on a clock
shifted so that its minute ends where the test needs it (`proxy_clock`): far off for a
test that counts requests within one minute, seconds away for one that waits for the
next. A test still checks that enough of the minute is left (`fresh_minute`), so a
proxy slow to start costs a wait, never a wrong result: no time bound anywhere.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import json
import re
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from harness import (
    APP_KEY,
    BASTION_EDGE,
    REPO,
    Proxy,
    Sandbox,
    proxy_env,
    start_proxy,
    wait_until,
)
from proxy_clock import ProxyClock, minute_ending_in
from redis_server import running_redis
from trust_support import BILLING_SECRET, REPORTS_SECRET, with_credentials

CONCURRENCY = 8  # requests in flight at once when counting admissions
SECONDS_NEEDED = 20  # of the proxy's minute, for a test that counts within one minute


def whole_minute() -> ProxyClock:
    """A clock whose minute has just begun: room for a start and a count within it."""
    return minute_ending_in(59.5)


def rules(tmp: Path, billing_quota: str, *, store: str | None = None,
          clients_extra: str = "") -> Path:
    """The shipped rules plus two apps: billing with `billing_quota`, reports without."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "rules.yaml"
    path.write_text(rules_text(billing_quota, store=store, clients_extra=clients_extra))
    return path


def rules_text(billing_quota: str, *, store: str | None = None,
               clients_extra: str = "") -> str:
    shipped = (REPO / "rules.yaml").read_text()
    if store is not None:  # the shipped rules say `store: sqlite`
        shipped = re.sub(r"(?m)^  store: sqlite\b", f"  store: {store}", shipped, count=1)
        assert store in shipped
    return shipped + f"""
clients:
{clients_extra}  apps:
    - name: billing
      secret_sha256: {hashlib.sha256(BILLING_SECRET.encode()).hexdigest()}
      quota: {billing_quota}
    - name: reports
      secret_sha256: {hashlib.sha256(REPORTS_SECRET.encode()).hexdigest()}
"""


def app_client(proxy: Proxy, app: str = "billing", max_retries: int = 0) -> openai.OpenAI:
    """The openai SDK as an app configures it: its proxy URL carries its credentials."""
    secret = BILLING_SECRET if app == "billing" else REPORTS_SECRET
    http_client = openai.DefaultHttpxClient(
        proxy=with_credentials(proxy.url, app, secret),
        verify=ssl.create_default_context(cafile=proxy.app_env()["SSL_CERT_FILE"]))
    return openai.OpenAI(api_key=APP_KEY, max_retries=max_retries, http_client=http_client,
                         base_url="https://api.openai.com/v1")


def chat(client: openai.OpenAI, text: str, **extra: object) -> httpx.Headers:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], **extra)  # type: ignore[call-overload]
    raw.parse()
    return raw.headers


def upstream_hits(sandbox: Sandbox, marker: str) -> int:
    """Chat requests the sandbox (Bastion) received whose body carries `marker`."""
    return sum(1 for entry in sandbox.journal()
               if entry.get("path", "").endswith("/chat/completions")
               and marker in str(entry.get("body")))


def metric(proxy: Proxy, pattern: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in proxy.metrics().splitlines()
               if re.match(pattern, line))


def stop(proxy: Proxy) -> None:
    assert proxy.process.stop() == 0, proxy.process.log()


@pytest.fixture(scope="module")
def limited(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Proxy, ProxyClock]]:
    tmp = tmp_path_factory.mktemp("quota")
    clock = whole_minute()
    running = start_proxy(tmp, proxy_env(sandbox) | clock.env(),
                          rules(tmp, "{requests_per_minute: 2}"))
    yield running, clock
    stop(running)


def test_over_its_quota_an_app_gets_openais_429_and_nothing_goes_upstream(
    limited: tuple[Proxy, ProxyClock], sandbox: Sandbox
) -> None:
    proxy, clock = limited
    clock.fresh_minute(SECONDS_NEEDED)
    marker = uuid.uuid4().hex
    billing, reports = app_client(proxy, "billing"), app_client(proxy, "reports")
    first = chat(billing, f"{marker} one")
    unlimited = [chat(reports, f"{marker} reports {i}") for i in range(4)]  # at the same time
    second = chat(billing, f"{marker} two")
    with pytest.raises(openai.RateLimitError) as caught:
        chat(billing, f"{marker} three")

    assert first["x-ratelimit-limit-requests"] == "2"
    assert [first["x-ratelimit-remaining-requests"],
            second["x-ratelimit-remaining-requests"]] == ["1", "0"]
    assert re.fullmatch(r"(\d+(\.\d+)?s|\d+ms)", second["x-ratelimit-reset-requests"])
    refused = caught.value
    assert refused.status_code == 429
    assert refused.code == "rate_limit_exceeded" and refused.type == "requests"
    headers = refused.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    assert headers["x-bastion-edge-error"] == "rate_limit_exceeded"
    assert upstream_hits(sandbox, f"{marker} three") == 0
    assert upstream_hits(sandbox, marker) == 2 + 4  # billing's two, all of reports'
    assert all("x-ratelimit-limit-requests" not in h for h in unlimited)
    assert metric(proxy, r'bastion_edge_quota_rejections_total\{app="billing",'
                           r'kind="requests"\}') >= 1
    assert 'bastion_edge_quota_remaining{app="billing",limit="requests_per_minute"} 0.0' \
        in proxy.metrics()
    # The report reads the same story from the access log: billing's busiest minute at its
    # limit and its refusal; reports (no quota, never refused) gets no row.
    row = report_row(proxy, "billing", records=3 + 4)
    assert row[:6] == ["billing", "own", "2", "1", "0", "0"]  # counted, 429, 503, no usage
    assert row[6] == "2/2 (100.0%)"


def report_row(proxy: Proxy, app: str, records: int) -> list[str]:
    """`app`'s row of `bastion-edge report`'s quota table over the proxy's access log,
    once the log holds `records` exchanges."""
    def logged() -> int:
        return sum(1 for line in proxy.access_log.read_text().splitlines()
                   if "event" not in json.loads(line))
    wait_until(lambda: logged() >= records, what="access log records")
    done = subprocess.run([BASTION_EDGE, "report", str(proxy.access_log), "--rules",
                           str(proxy.rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    table = done.stdout.partition("quota use per app")[2]
    assert not re.search(r"(?m)^reports\s", table), done.stdout
    rows = [re.split(r"\s{2,}", line) for line in table.splitlines()]
    found = [cells for cells in rows if cells[0] == app]
    assert len(found) == 1, done.stdout
    return found[0]


def test_the_sdk_retries_after_the_retry_after_it_was_given(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clock = minute_ending_in(12)  # a start, one chat, then a retry-after of seconds
    proxy = start_proxy(tmp_path, proxy_env(sandbox) | clock.env(),
                        rules(tmp_path, "{requests_per_minute: 1}"))
    try:
        clock.fresh_minute(4)
        marker = uuid.uuid4().hex
        client = app_client(proxy, max_retries=1)
        chat(client, f"{marker} one")
        before = time.time()
        headers = chat(client, f"{marker} two")  # 429 first, then the retry in the next minute
        assert clock.minute(before) < clock.minute(time.time())  # it waited for the next one
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert upstream_hits(sandbox, marker) == 2
        assert metric(proxy, r'bastion_edge_quota_rejections_total\{app="billing"') == 1
    finally:
        stop(proxy)


def test_a_streamed_chat_is_admitted_by_estimate_and_debited_by_its_usage(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clock = whole_minute()
    proxy = start_proxy(tmp_path, proxy_env(sandbox) | clock.env(),
                        rules(tmp_path, "{tokens_per_minute: 100000}"))
    try:
        clock.fresh_minute(SECONDS_NEEDED)
        client = app_client(proxy)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "count me"}],
            max_tokens=5000, stream=True, stream_options={"include_usage": True})
        usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
        assert usage is not None
        spent = usage.prompt_tokens + usage.completion_tokens
        assert spent < 5000  # the estimate included max_tokens; the report is smaller

        def remaining() -> int:
            return int(chat(client, "probe", max_tokens=1)["x-ratelimit-remaining-tokens"])
        # Each probe reserves its own estimate (prompt + 1) before it is corrected; after
        # the flush, what is left reflects the stream's report, not its 5000 estimate.
        wait_until(lambda: remaining() > 100_000 - 5000, timeout=30,
                   what="the stream's usage replaced its estimate")
    finally:
        stop(proxy)


def test_a_reload_that_raises_a_quota_admits_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    path = rules(tmp_path, "{requests_per_minute: 1}")
    clock = whole_minute()
    proxy = start_proxy(tmp_path, proxy_env(sandbox) | clock.env(), path)
    try:
        clock.fresh_minute(SECONDS_NEEDED)
        client = app_client(proxy)
        chat(client, "before the reload")
        with pytest.raises(openai.RateLimitError):
            chat(client, "over the quota")
        path.write_text(rules_text("{requests_per_minute: 3}"))
        wait_until(lambda: 'bastion_edge_rules_reloads_total{result="success"} 2.0'
                   in proxy.metrics(), timeout=30, what="reload")  # the start, the reload
        headers = chat(client, "after the reload")  # same minute, same counters
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == "1"
    finally:
        stop(proxy)


def count_admitted(proxies: list[Proxy], marker: str, attempts: int) -> tuple[int, int]:
    """`attempts` chats at once (CONCURRENCY in flight), each over a fresh connection,
    round robin over `proxies`: (passed, refused with 429)."""
    def one(i: int) -> bool:
        with app_client(proxies[i % len(proxies)]) as client:
            try:
                chat(client, f"{marker} {i}")
            except openai.RateLimitError:
                return False
            return True

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        passed = sum(pool.map(one, range(attempts)))
    return passed, attempts - passed


def test_workers_share_one_quota(sandbox: Sandbox, tmp_path: Path) -> None:
    quota = 5
    clock = whole_minute()
    proxy = start_proxy(tmp_path, proxy_env(sandbox) | clock.env(),
                        rules(tmp_path, f"{{requests_per_minute: {quota}}}"),
                        extra=["--workers", "2"])
    try:
        clock.fresh_minute(30)
        marker = uuid.uuid4().hex
        passed, refused = count_admitted([proxy], marker, 3 * quota)
        assert (passed, refused) == (quota, 2 * quota)
        assert upstream_hits(sandbox, marker) == quota
    finally:
        stop(proxy)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with running_redis(tmp_path) as url:
        yield url


def test_two_proxies_share_one_quota_over_redis(
    sandbox: Sandbox, tmp_path: Path, redis_url: str
) -> None:
    quota = 5
    path = rules(tmp_path, f"{{requests_per_minute: {quota}}}", store=redis_url)
    clock = whole_minute()  # both proxies on one clock, as replicas are
    one = start_proxy(tmp_path / "one", proxy_env(sandbox) | clock.env(), path)
    two = start_proxy(tmp_path / "two", proxy_env(sandbox) | clock.env(), path)
    try:
        clock.fresh_minute(30)
        marker = uuid.uuid4().hex
        passed, refused = count_admitted([one, two], marker, 3 * quota)
        assert (passed, refused) == (quota, 2 * quota)
        assert upstream_hits(sandbox, marker) == quota
        assert not (one.confdir / "quotas.sqlite3").exists()
    finally:
        stop(one)
        stop(two)


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_a_redis_outage_follows_the_outage_mode(
    sandbox: Sandbox, tmp_path: Path, mode: str
) -> None:
    with running_redis(tmp_path) as url:
        path = rules(tmp_path, "{requests_per_minute: 100}", store=url,
                     clients_extra=f"  quota_store_outage: {mode}\n")
        proxy = start_proxy(tmp_path, proxy_env(sandbox), path)
        client = app_client(proxy)
        assert chat(client, "redis up")["x-ratelimit-limit-requests"] == "100"
    try:  # redis-server has stopped
        marker = uuid.uuid4().hex
        if mode == "fail_open":
            headers = chat(client, f"{marker} redis down")
            assert "x-ratelimit-limit-requests" not in headers  # let through, unmetered
            assert upstream_hits(sandbox, marker) == 1
        else:
            with pytest.raises(openai.InternalServerError) as caught:
                chat(client, f"{marker} redis down")
            assert caught.value.status_code == 503
            assert caught.value.code == "quota_store_unavailable"
            assert caught.value.response.headers["retry-after"] == "1"
            assert upstream_hits(sandbox, marker) == 0
            assert metric(proxy, r'bastion_edge_quota_rejections_total\{app="billing",'
                                 r'kind="store_outage"\}') == 1
        assert metric(proxy, rf'bastion_edge_quota_store_errors_total\{{mode="{mode}",'
                             r'operation="admit"\}') == 1
    finally:
        stop(proxy)


def test_a_batch_runs_at_its_creators_quota_instead_of_failing_lines(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from test_batches import chat_line, finished, jsonl

    clock = minute_ending_in(20)  # a start, two lines, then the third waits seconds
    proxy = start_proxy(tmp_path, proxy_env(sandbox) | clock.env(),
                        rules(tmp_path, "{requests_per_minute: 2}"))
    try:
        clock.fresh_minute(10)
        marker = uuid.uuid4().hex
        client = app_client(proxy)
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(
            [chat_line(f"line-{i}", f"{marker} {i}") for i in range(3)]))), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id,
                                      endpoint="/v1/chat/completions", completion_window="24h")
        done = finished(client, batch.id, timeout=150)  # the third waits for the next minute
        assert done.status == "completed"
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (3, 0)
        sent = sorted(entry["time"] for entry in sandbox.journal()
                      if marker in str(entry.get("body")))
        assert len(sent) == 3
        per_minute = collections.Counter(clock.minute(at) for at in sent)
        assert max(per_minute.values()) <= 2  # sent at the quota's pace, never 3 in a minute
    finally:
        stop(proxy)
