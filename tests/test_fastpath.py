"""The fast path (api/fastpath.py) answers byte for byte as the FastAPI routes behind it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from banditloop.api.fastpath import FastPath
from banditloop.app import create_app
from banditloop.config import Settings
from helpers import BASES, actions, url

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("fastpath")

KEY = "client-key-1"
LOOP = "/loops/other/personalizer/v1.0"


@dataclass
class Call:
    id: str
    path: str
    body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = KEY
    fast: bool = True  # answered by the fast path, not replayed to FastAPI


def rank(event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "contextFeatures": [{"user": {"id": "u1"}}],
        "actions": actions("a", "b", "c"),
        "eventId": event_id,
        **extra,
    }


def chunks(n: int) -> Iterator[bytes]:
    yield b'{"actions": [{"id": "a", "features": [{"k": "'
    for _ in range(n):
        yield b"x" * 100
    yield b'"}]}]}'


CALLS = [
    *[Call(f"rank-{i}", url(base, "/rank"), rank(f"e{i}")) for i, base in enumerate(BASES)],
    *[
        Call(f"reward-{i}", url(base, f"/events/e{i}/reward"), {"value": 0.5})
        for i, base in enumerate(BASES)
    ],
    Call("activate", url(BASES[0], "/events/e0/activate")),
    Call("loop-rank", f"{LOOP}/rank", rank("o1")),
    Call("retry", url(BASES[0], "/rank"), rank("e0")),
    Call("reused-event-id", url(BASES[0], "/rank"), rank("e0", excludedActions=["a"])),
    Call("rerank", url(BASES[0], "/rank"), rank("r1", rerank=True)),
    Call("no-key", url(BASES[0], "/rank"), rank("k1"), key=None),
    Call("wrong-key", url(BASES[0], "/events/e0/reward"), {"value": 1}, key="nope"),
    Call(
        "bearer",
        url(BASES[0], "/rank"),
        rank("k2"),
        headers={"Authorization": f"Bearer {KEY}"},
        key=None,
    ),
    Call("unknown-loop", "/loops/nope/personalizer/v1.0/rank", rank("n1")),
    Call("bad-feature", url(BASES[0], "/rank"), rank("f1", contextFeatures=[{"t": ["x"]}])),
    Call("bad-reward", url(BASES[0], "/events/e0/reward"), {"value": 2}, fast=False),
    Call("not-json", url(BASES[0], "/rank"), content=b'{"actions": [', fast=False),
    Call("no-body", url(BASES[0], "/events/e0/reward"), content=b"", fast=False),
    Call("list-body", url(BASES[0], "/rank"), [1, 2], fast=False),
    Call("long-event-id", url(BASES[0], f"/events/{'e' * 257}/activate"), fast=False),
    Call(
        "text-plain",
        url(BASES[0], "/rank"),
        content=orjson.dumps(rank("t1")),
        headers={"content-type": "text/plain"},
        fast=False,
    ),
    Call("chunked-413", url(BASES[0], "/rank"), content=b"".join(chunks(50))),
    Call("multislot", url(BASES[0], "/multislot/rank"), rank("m1"), fast=False),
]


def _without_fast_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    return app


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient]]:
    def settings(name: str) -> Settings:
        return Settings(
            data_dir=tmp_path_factory.mktemp(name) / "data",
            client_keys=[KEY],
            max_body_bytes=2000,
            # nothing closes, so nothing is learned: both models stay equal
            loop={"rewardWaitTime": "PT1H", "rewardAggregation": "average"},
            default_policy="--cb_explore_adf --epsilon 0.2 -q ::",  # no random tie-breaks
            loops={"other": {}},
        )

    fast = TestClient(create_app(settings("fast")), raise_server_exceptions=False)
    routes = TestClient(
        _without_fast_path(create_app(settings("routes"))), raise_server_exceptions=False
    )
    with fast, routes:
        yield fast, routes


def _send(client: TestClient, call: Call) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = {"X-Request-Id": f"rid-{call.id}", "content-type": "application/json"}
    headers.update(call.headers)
    if call.key:
        headers["Ocp-Apim-Subscription-Key"] = call.key
    content: Any = call.content
    if call.id == "chunked-413":
        content = chunks(50)  # no Content-Length: counted as it arrives
    elif call.body is not None:
        content = orjson.dumps(call.body)
    r = client.post(call.path, content=content, headers=headers)
    return r.status_code, list(r.headers.multi_items()), r.content


def test_fast_path_answers_as_the_routes(
    clients: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    routed: list[bool] = []  # per request through the fast path: whether FastAPI routed it
    call_fast_path = FastPath.__call__

    async def spy(self: FastPath, scope: Any, receive: Any, send: Any) -> None:
        await call_fast_path(self, scope, receive, send)
        if scope["type"] == "http":
            routed.append("router" in scope)

    monkeypatch.setattr(FastPath, "__call__", spy)
    fast, routes = clients
    for call in CALLS:
        routed.clear()
        got, want = _send(fast, call), _send(routes, call)
        assert got == want, call.id
        assert got[0] != 500, (call.id, got)
        assert routed == [not call.fast], call.id


def test_fast_path_takes_every_mount(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    path = FastPath(app.router, app.state, ["/personalizer/v1.0", "/loops/{loop}/personalizer"])
    route, endpoint, loop, event = path.match("/loops/x-1/personalizer/events/e%2F/activate") or (
        None,
        "",
        "",
        "",
    )
    assert route is not None and route.path == "/events/{eventId}/activate"
    assert (endpoint, loop, event) == ("activate", "x-1", "e%2F")
    assert path.match("/personalizer/v1.0/rank") is not None
    for miss in (
        "/personalizer/v1.0/rank/",
        "/personalizer/v1.1/rank",
        "/personalizer/v1.0/multislot/rank",
        "/personalizer/v1.0/events//reward",
        "/personalizer/v1.0/event/e/reward",
        "/loops//personalizer/rank",
        "/loops/x/rank",
        "/personalizer/v1.0/events/e/rewards",
    ):
        assert path.match(miss) is None, miss
