"""Limits (body size, actions, features, strings, slots) and load shedding (429/503)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import Settings
from banditloop.errors import Overloaded
from banditloop.featurize import FeatureLimits, count_features
from banditloop.limits import TokenBuckets
from banditloop.store import SqliteStore
from conftest import Server
from helpers import TIMEOUT, V1, actions


def make_client(tmp_path: Path, **kw: Any) -> TestClient:
    s = Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"}, **kw)
    return TestClient(create_app(s), raise_server_exceptions=False)


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-ms-error-code"] == code
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code and err["message"]
    return err


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(
        tmp_path, max_body_bytes=2000, max_features=12, max_string_length=40, max_actions=60
    ) as c:
        yield c


def rank_body(n_actions: int = 2, **extra: Any) -> dict[str, Any]:
    return {"actions": actions(*[f"a{i}" for i in range(n_actions)]), **extra}


# -- body size ---------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_parsing(small: TestClient) -> None:
    big = rank_body(contextFeatures=[{"pad": "x" * 3000}])
    err = assert_error(small.post(f"{V1}/rank", json=big), 413, "PayloadSizeExceeded")
    assert "2000 bytes" in err["message"]
    # not even JSON: refused on Content-Length alone
    r = small.post(f"{V1}/events/e/reward", content=b"{" * 5000)
    assert_error(r, 413, "PayloadSizeExceeded")


def test_chunked_body_is_counted(small: TestClient) -> None:
    def chunks(n: int) -> Iterator[bytes]:
        yield b'{"actions": [{"id": "a", "features": [{"k": "'
        for _ in range(n):
            yield b"x" * 100
        yield b'"}]}]}'

    headers = {"content-type": "application/json"}
    r = small.post(f"{V1}/rank", content=chunks(50), headers=headers)
    assert_error(r, 413, "PayloadSizeExceeded")
    r = small.post(f"{V1}/rank", content=chunks(2), headers=headers)
    assert r.status_code == 400  # small enough: parsed, then the string limit (40) applies
    ok = small.post(
        f"{V1}/rank",
        content=iter([b'{"actions": [{"id": "a", ', b'"features": [{"k": 1}]}]}']),
        headers=headers,
    )
    assert ok.status_code == 201, ok.text


# -- actions, features, strings, slots ------------------------------------------------


def test_action_count_is_configurable(tmp_path: Path, small: TestClient) -> None:
    assert small.post(f"{V1}/rank", json=rank_body(5)).status_code == 201
    with make_client(tmp_path / "default") as default:
        err = assert_error(
            default.post(f"{V1}/rank", json=rank_body(51)), 400, "InvalidRankRequest"
        )
        assert "between 1 and 50" in err["message"]
    with make_client(tmp_path / "wide", max_actions=120) as wide:
        r = wide.post(f"{V1}/rank", json=rank_body(100))
        assert r.status_code == 201, r.text
        assert len(r.json()["ranking"]) == 100
        assert_error(wide.post(f"{V1}/rank", json=rank_body(121)), 400, "InvalidRankRequest")


def test_feature_count_and_string_length(small: TestClient) -> None:
    ctx = [{"f": {str(i): i for i in range(11)}}]  # 11 context + 2 action features > 12
    err = assert_error(
        small.post(f"{V1}/rank", json=rank_body(contextFeatures=ctx)), 400, "InvalidRankRequest"
    )
    assert "at most 12 features" in err["message"]
    arr = [{"emb": [0.5] * 20}]  # array items count one each
    assert_error(
        small.post(f"{V1}/rank", json=rank_body(contextFeatures=arr)), 400, "InvalidRankRequest"
    )
    for ctx in ([{"k": "v" * 41}], [{"k" * 41: "v"}], [{"ns": {"deep": {"k" * 41: 1}}}]):
        err = assert_error(
            small.post(f"{V1}/rank", json=rank_body(contextFeatures=ctx)),
            400,
            "InvalidRankRequest",
        )
        assert "at most 40 characters" in err["message"]
    ok = small.post(f"{V1}/rank", json=rank_body(contextFeatures=[{"k": "v" * 40, "n": 1}]))
    assert ok.status_code == 201, ok.text


def test_feature_limits_count_leaves() -> None:
    def count(features: list[Any], most: int) -> None:
        limits = FeatureLimits("InvalidRankRequest", most, 10)
        for part in features:
            count_features(part, limits)

    count([[{"a": 1, "b": [1, 2]}], [{"c": "x"}]], 4)
    with pytest.raises(Exception, match="at most 3 features"):
        count([[{"a": 1, "b": [1, 2]}], [{"c": "x"}]], 3)
    count([None, None, [{"k": None}]], 1)  # nulls are dropped, not counted


def test_slots_at_most_actions(tmp_path: Path) -> None:
    policy = "--ccb_explore_adf --epsilon 0.2 -q ::"
    with make_client(tmp_path, default_policy=policy, max_features=100) as c:
        body = {
            "actions": actions("a", "b"),
            "slots": [{"id": f"s{i}", "baselineAction": "a"} for i in range(3)],
        }
        err = assert_error(c.post(f"{V1}/multislot/rank", json=body), 400, "InvalidRankRequest")
        assert "Slot count" in err["message"]
        body["slots"] = [{"id": "s0", "baselineAction": "a", "features": [{"x": "y" * 20_000}]}]
        assert_error(c.post(f"{V1}/multislot/rank", json=body), 400, "InvalidRankRequest")


# -- per-key rate limits ---------------------------------------------------------------


def test_token_bucket_refills() -> None:
    b = TokenBuckets(rate=2, burst=3)
    assert [b.take("k", 0.0) for _ in range(3)] == [0, 0, 0]
    assert b.take("k", 0.0) == pytest.approx(0.5)
    assert b.take("other", 0.0) == 0  # per key
    assert b.take("k", 0.5) == 0  # one token back after half a second


def test_rate_limit_per_key_answers_429_with_retry_after(tmp_path: Path) -> None:
    with make_client(
        tmp_path, client_keys=["k1", "k2"], rate_limit_per_second=0.5, rate_limit_burst=3
    ) as c:
        statuses = [
            c.post(f"{V1}/rank", json=rank_body(), headers={"Ocp-Apim-Subscription-Key": "k1"})
            for _ in range(5)
        ]
        assert [r.status_code for r in statuses] == [201, 201, 201, 429, 429]
        assert_error(statuses[3], 429, "TooManyRequests")
        assert int(statuses[3].headers["retry-after"]) == 2  # 0.5 tokens a second
        # another key, the same key as a bearer token, and health checks are separate
        r = c.post(f"{V1}/rank", json=rank_body(), headers={"Ocp-Apim-Subscription-Key": "k2"})
        assert r.status_code == 201
        r = c.post(f"{V1}/rank", json=rank_body(), headers={"Authorization": "Bearer k1"})
        assert r.status_code == 429
        assert all(c.get("/healthz").status_code == 200 for _ in range(10))


# -- the store's writer queue -----------------------------------------------------------


def test_writer_queue_is_bounded(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data", "NORMAL", max_queue=3)
    gate, held = threading.Event(), threading.Event()

    def hold(conn: object) -> bool:
        held.set()
        return gate.wait(60)

    try:
        blocked = store.submit(hold)
        assert held.wait(60)  # the writer holds the first job; the rest wait in the queue
        waiting = [store.submit(lambda conn: 1) for _ in range(3)]
        refused = store.submit(lambda conn: 1)
        with pytest.raises(Overloaded, match="write queue is full"):
            refused.result(1)
        assert Overloaded.retry_after == 1
        gate.set()
        assert blocked.result(5) is True
        assert [f.result(5) for f in waiting] == [1, 1, 1]
        assert store.submit(lambda conn: 2).result(5) == 2  # accepted again
    finally:
        gate.set()
        store.close()


# -- overload: a load test against a real server -----------------------------------------


async def _fire(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

        async def one(i: int) -> httpx.Response:
            key = "hot" if i % 2 else f"cold-{i}"
            return await http.post(
                f"{V1}/rank",
                json={
                    "contextFeatures": [{"user": f"u{i % 7}"}],
                    "actions": actions("a", "b", "c"),
                },
                headers={"Ocp-Apim-Subscription-Key": key},
            )

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_overload_sheds_with_retry_after_and_recovers(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        extra=(
            "BANDITLOOP_MAX_CONCURRENT_REQUESTS=4",
            "BANDITLOOP_RATE_LIMIT_PER_SECOND=20",
            "BANDITLOOP_RATE_LIMIT_BURST=40",
        ),
    ).start()
    try:
        t0 = time.perf_counter()
        responses = asyncio.run(_fire(server.url, 300))
        elapsed = time.perf_counter() - t0
        counts = Counter(r.status_code for r in responses)
        print(f"300 concurrent ranks in {elapsed:.2f} s: {dict(counts)}")
        assert set(counts) <= {201, 429, 503}, counts
        assert counts[201] > 0 and counts[503] > 0 and counts[429] > 0, counts
        for r in responses:
            if r.status_code == 503:
                assert_error(r, 503, "ServiceUnavailable")
                assert r.headers["retry-after"] == "1"
            elif r.status_code == 429:
                assert_error(r, 429, "TooManyRequests")
                assert int(r.headers["retry-after"]) >= 1
        assert counts[429] <= 150 - 40 + 5  # only the hot key is limited, after its burst
        # the server still answers, at once
        r = httpx.post(
            f"{server.url}{V1}/rank", json={"actions": actions("a", "b")}, timeout=TIMEOUT
        )
        assert r.status_code == 201, r.text
        metrics = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
        assert 'status="503"' in metrics
        shed = f'banditloop_requests_shed_total{{reason="overloaded"}} {float(counts[503])}'
        limited = f'banditloop_requests_shed_total{{reason="rate_limited"}} {float(counts[429])}'
        assert shed in metrics and limited in metrics, metrics
    finally:
        server.stop()
