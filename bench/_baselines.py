"""The two baselines of bench/throughput.py, served by uvicorn like banditloop.

``fastapi_app``: a bare FastAPI endpoint that validates the Rank body with banditloop's
own pydantic model (``RankRequest``) and returns a canned answer: the framework's cost.

``asgi_app``: a bare ASGI endpoint, no framework: orjson parses the body,
``banditloop.ranking.plan`` builds the VW example from it (per request), and one VW
workspace (banditloop's default policy, ``Policy.pmf``) predicts from it as banditloop
does, so that the two compare like with like. Neither logs anything.

    uvicorn --app-dir bench _baselines:fastapi_app --workers 2
    uvicorn --app-dir bench _baselines:asgi_app --workers 2
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from starlette.responses import Response

from banditloop.api.schemas import RankRequest

CANNED = orjson.dumps(
    {
        "ranking": [{"id": "a", "probability": 1.0}],
        "eventId": "canned",
        "rewardActionId": "a",
    }
)

fastapi_app = FastAPI()


@fastapi_app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@fastapi_app.post("/personalizer/v1.0/rank", status_code=201)
async def rank(body: RankRequest) -> Response:
    return Response(CANNED, status_code=201, media_type="application/json")


class _Predictor:
    """One VW workspace with banditloop's default policy, started on first use."""

    def __init__(self) -> None:
        self.policy: Any = None

    def pmf(self, p: Any) -> list[float]:
        if self.policy is None:
            from banditloop.policy import DEFAULT_POLICY, Policy

            self.policy = Policy(DEFAULT_POLICY)
        return list(self.policy.pmf(p.example))


_predictor = _Predictor()


def _plan(body: dict[str, Any]) -> Any:
    from banditloop.ranking import plan

    actions = [(a["id"], a.get("features")) for a in body["actions"]]
    return plan(body.get("contextFeatures"), actions, body.get("excludedActions"))


_JSON = [(b"content-type", b"application/json")]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _predictor.pmf(_plan({"actions": [{"id": "a", "features": [{"x": 1}]}]}))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    body = orjson.loads(b"".join(chunks))
    p = _plan(body)
    pmf = _predictor.pmf(p)
    best = max(range(len(pmf)), key=pmf.__getitem__)
    answer = {
        "ranking": [{"id": i, "probability": q} for i, q in zip(p.vw_ids, pmf, strict=True)],
        "eventId": body.get("eventId") or "none",
        "rewardActionId": p.vw_ids[best],
    }
    await send({"type": "http.response.start", "status": 201, "headers": _JSON})
    await send({"type": "http.response.body", "body": orjson.dumps(answer)})
