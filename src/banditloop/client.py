"""The first-party Python client: :class:`Client` and :class:`AsyncClient`, on httpx.

Every endpoint of a server (docs/operator-guide.md), typed with the server's own
pydantic models, for one loop (``loop="default"`` or a named one) or the whole
server (named loops). Errors are the exceptions of :mod:`banditloop.errors`,
carrying the server's error code (``ex.code``) and HTTP status.

Retries: a request that never reached the server (connection refused), or that
the server shed before doing anything (503 or 429 with ``Retry-After``), is sent
again, up to ``retries`` times. A request that may have been answered (a read
timeout, a dropped connection) is sent again only when repeating it is safe: GET,
PUT and DELETE, and Rank, whose event ID the client fills in when the caller gives
none, so that a retried Rank is answered from the log with the same ranking.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from .api.admin import Deleted, ImportResult, LogsProperties, ModelProperties, PolicyContract
from .api.items import ItemIn, ItemOut, Upserted
from .api.loops import LoopInfo, LoopSpec
from .api.recommendations import Recommendation, RecommendIn, Tracked
from .api.schemas import (
    MultiSlotRankRequest,
    MultiSlotRankResponse,
    MultiSlotRewardRequest,
    RankRequest,
    RankResponse,
)
from .config import ServiceConfiguration
from .errors import (
    BadRequest,
    BanditloopError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .ids import path_segment
from .recommendations.config import ScenarioConfig

T = TypeVar("T")
Json = dict[str, Any]
KEY_HEADER = "Ocp-Apim-Subscription-Key"
_ERRORS: dict[int, type[BanditloopError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    503: Unavailable,
}
_SAFE = frozenset({"GET", "PUT", "DELETE"})
UNHURRIED = httpx.Timeout(30.0, read=None)  # for a long upload or download


def error_of(response: httpx.Response) -> BanditloopError:
    """The exception of an error response: the class of its status, the server's code
    and message (``Retry-After`` in ``retry_after``)."""
    try:
        err = response.json()["error"]
        code, message, target = str(err["code"]), str(err["message"]), err.get("target")
        details = err.get("details")
    except (ValueError, KeyError, TypeError):
        code, message = None, f"HTTP {response.status_code}: {response.text[:200]}"
        target = details = None
    retry = response.headers.get("retry-after")
    seconds = int(retry) if retry and retry.isdigit() else None
    ex: BanditloopError
    if response.status_code == 429:
        ex = RateLimited(message, seconds or 1)
        ex.code = code or ex.code
    else:
        ex = _ERRORS.get(response.status_code, BanditloopError)(message, code, target, details)
        ex.retry_after = seconds
    ex.status = response.status_code
    return ex


@dataclass
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    content: bytes | Iterable[bytes] | None = None  # an iterable is streamed, never resent
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    safe: bool = False  # may be repeated when an answer may have been lost
    timeout: httpx.Timeout | None = None  # None: the client's

    def __post_init__(self) -> None:
        self.safe = self.safe or self.method in _SAFE
        if self.content is not None and not isinstance(self.content, bytes):
            self.safe = False


def _none(_: httpx.Response) -> None:
    return None


def _json(r: httpx.Response) -> Any:
    return r.json()


def _model(cls: type[T]) -> Callable[[httpx.Response], T]:
    def read(r: httpx.Response) -> T:
        return cls.model_validate_json(r.content)  # type: ignore[attr-defined, no-any-return]

    return read


def _body(value: BaseModel | Json | list[Any]) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True, exclude_none=True, by_alias=True)
    return value


def _times(start: datetime | None, end: datetime | None) -> dict[str, str]:
    return {k: v.isoformat() for k, v in (("startTime", start), ("endTime", end)) if v is not None}


class Endpoints:
    """The requests of every endpoint, for one loop; :class:`Client` and
    :class:`AsyncClient` send them."""

    def __init__(self, loop: str = "default") -> None:
        self.loop = path_segment(loop, "A loop name")
        self.prefix = ("" if loop == "default" else f"/loops/{self.loop}") + "/personalizer/v1.0"

    def _p(self, path: str) -> str:
        return self.prefix + path

    # -- client: events ------------------------------------------------------------

    def rank(self, request: RankRequest | Json) -> Call[RankResponse]:
        body = _body(request)
        body.setdefault("eventId", uuid.uuid4().hex)  # a retry is the same Rank
        return Call("POST", self._p("/rank"), _model(RankResponse), json=body, safe=True)

    def reward(self, event_id: str, value: float) -> Call[None]:
        path = self._p(f"/events/{path_segment(event_id, 'An event ID')}/reward")
        return Call("POST", path, _none, json={"value": value})

    def activate(self, event_id: str) -> Call[None]:
        path = self._p(f"/events/{path_segment(event_id, 'An event ID')}/activate")
        return Call("POST", path, _none, safe=True)

    def rank_multislot(self, request: MultiSlotRankRequest | Json) -> Call[MultiSlotRankResponse]:
        body = _body(request)
        body.setdefault("eventId", uuid.uuid4().hex)
        path = self._p("/multislot/rank")
        return Call("POST", path, _model(MultiSlotRankResponse), json=body, safe=True)

    def reward_multislot(
        self, event_id: str, rewards: MultiSlotRewardRequest | dict[str, float]
    ) -> Call[None]:
        if isinstance(rewards, dict):
            body: Any = {"reward": [{"slotId": k, "value": v} for k, v in rewards.items()]}
        else:
            body = _body(rewards)
        path = self._p(f"/multislot/events/{path_segment(event_id, 'An event ID')}/reward")
        return Call("POST", path, _none, json=body)

    def activate_multislot(self, event_id: str) -> Call[None]:
        path = self._p(f"/multislot/events/{path_segment(event_id, 'An event ID')}/activate")
        return Call("POST", path, _none, safe=True)

    # -- admin: configuration, policy, model, logs --------------------------------

    def get_configuration(self) -> Call[ServiceConfiguration]:
        return Call("GET", self._p("/configurations/service"), _model(ServiceConfiguration))

    def put_configuration(self, config: ServiceConfiguration | Json) -> Call[ServiceConfiguration]:
        path = self._p("/configurations/service")
        return Call("PUT", path, _model(ServiceConfiguration), json=_body(config))

    def get_policy(self) -> Call[PolicyContract]:
        return Call("GET", self._p("/configurations/policy"), _model(PolicyContract))

    def put_policy(self, name: str, arguments: str) -> Call[PolicyContract]:
        body = {"name": name, "arguments": arguments}
        return Call("PUT", self._p("/configurations/policy"), _model(PolicyContract), json=body)

    def reset_policy(self) -> Call[PolicyContract]:
        return Call("DELETE", self._p("/configurations/policy"), _model(PolicyContract))

    def apply_from_evaluation(self, evaluation_id: str, policy_name: str) -> Call[None]:
        body = {"evaluationId": evaluation_id, "policyName": policy_name}
        return Call("POST", self._p("/configurations/applyFromEvaluation"), _none, json=body)

    def export_model(self, signed: bool = False) -> Call[bytes]:
        params = {"signed": str(signed).lower()}
        return Call("GET", self._p("/model"), lambda r: r.content, params=params)

    def import_model(self, blob: bytes) -> Call[None]:
        headers = {"Content-Type": "application/octet-stream"}
        return Call("PUT", self._p("/model"), _none, content=blob, headers=headers)

    def reset_model(self) -> Call[None]:
        return Call("DELETE", self._p("/model"), _none)

    def model_properties(self) -> Call[ModelProperties]:
        return Call("GET", self._p("/model/properties"), _model(ModelProperties))

    def logs_properties(self) -> Call[LogsProperties]:
        return Call("GET", self._p("/logs/properties"), _model(LogsProperties))

    def export_logs(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Call[list[Json]]:
        """The joined decisions of a time range as DSJSON objects."""

        def read(r: httpx.Response) -> list[Json]:
            import orjson

            return [orjson.loads(line) for line in r.content.splitlines() if line.strip()]

        return Call("GET", self._p("/logs/export"), read, params=_times(start, end))

    def export_log_lines(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> Call[None]:
        """:meth:`export_logs` for :meth:`Client.lines`: one DSJSON line at a time."""
        params = _times(start, end)
        return Call("GET", self._p("/logs/export"), _none, params=params, timeout=UNHURRIED)

    def import_logs(self, chunks: Iterable[bytes], learn: bool = True) -> Call[ImportResult]:
        """Upload DSJSON decisions, streamed (gzip-compressed or not); read timeout off,
        since the server checks the whole upload before it answers."""
        return Call(
            "POST",
            self._p("/logs/import"),
            _model(ImportResult),
            content=chunks,
            params={} if learn else {"learn": "false"},
            headers={"Content-Type": "application/x-ndjson"},
            timeout=UNHURRIED,
        )

    def delete_logs(self) -> Call[None]:
        return Call("DELETE", self._p("/logs"), _none)

    def delete_event(self, event_id: str) -> Call[int]:
        path = self._p(f"/logs/events/{path_segment(event_id, 'An event ID')}")
        return Call("DELETE", path, lambda r: _model(Deleted)(r).deleted)

    def forget(self, feature: str | list[str], value: str | float | bool) -> Call[int]:
        body = {"feature": feature, "value": value}
        read = lambda r: _model(Deleted)(r).deleted  # noqa: E731
        return Call("POST", self._p("/logs/forget"), read, json=body, safe=True)

    def holdout_lift(self) -> Call[Json]:
        return Call("GET", self._p("/holdout/lift"), _json)

    # -- evaluations and feature importances -------------------------------------

    def create_evaluation(
        self,
        evaluation_id: str,
        name: str,
        policies: list[PolicyContract | Json] = [],  # noqa: B006 (never changed)
        start: datetime | None = None,
        end: datetime | None = None,
        optimize: bool = False,
    ) -> Call[None]:
        body: Json = {
            "name": name,
            "policies": [_body(p) for p in policies],
            "enableOfflineExperimentation": True,
            "enablePolicyOptimization": optimize,
            **_times(start, end),
        }
        path = self._p(f"/evaluations/{path_segment(evaluation_id, 'An evaluation ID')}")
        return Call("PUT", path, _none, json=body)

    def get_evaluation(self, evaluation_id: str) -> Call[Json]:
        """An evaluation: status, estimates per policy and their diagnostics."""
        path = self._p(f"/evaluations/{path_segment(evaluation_id, 'An evaluation ID')}")
        return Call("GET", path, _json)

    def list_evaluations(self) -> Call[list[Json]]:
        return Call("GET", self._p("/evaluations"), _json)

    def delete_evaluation(self, evaluation_id: str) -> Call[None]:
        path = self._p(f"/evaluations/{path_segment(evaluation_id, 'An evaluation ID')}")
        return Call("DELETE", path, _none)

    def create_feature_importance(
        self, job_id: str, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> Call[None]:
        path = self._p(f"/featureImportances/{path_segment(job_id, 'A job ID')}")
        return Call("PUT", path, _none, json={"name": name, **_times(start, end)})

    def get_feature_importance(self, job_id: str) -> Call[Json]:
        path = self._p(f"/featureImportances/{path_segment(job_id, 'A job ID')}")
        return Call("GET", path, _json)

    # -- items, tracking, scenarios, recommendations ------------------------------

    def put_items(self, items: list[ItemIn | Json]) -> Call[int]:
        body = [_body(it) for it in items]
        return Call("PUT", self._p("/items"), lambda r: _model(Upserted)(r).upserted, json=body)

    def get_item(self, item_id: str) -> Call[ItemOut]:
        path = self._p(f"/items/{path_segment(item_id, 'An item ID')}")
        return Call("GET", path, _model(ItemOut))

    def delete_item(self, item_id: str) -> Call[None]:
        return Call("DELETE", self._p(f"/items/{path_segment(item_id, 'An item ID')}"), _none)

    def track(self, events: list[Json]) -> Call[Tracked]:
        body = {"events": events}
        return Call("POST", self._p("/tracking/events"), _model(Tracked), json=body)

    def tracking_status(self) -> Call[Json]:
        return Call("GET", self._p("/tracking/status"), _json)

    def list_scenarios(self) -> Call[dict[str, ScenarioConfig]]:
        def read(r: httpx.Response) -> dict[str, ScenarioConfig]:
            return {k: ScenarioConfig.model_validate(v) for k, v in r.json().items()}

        return Call("GET", self._p("/scenarios"), read)

    def get_scenario(self, name: str) -> Call[ScenarioConfig]:
        path = self._p(f"/scenarios/{path_segment(name, 'A scenario name')}")
        return Call("GET", path, _model(ScenarioConfig))

    def put_scenario(self, name: str, spec: ScenarioConfig | Json) -> Call[ScenarioConfig]:
        path = self._p(f"/scenarios/{path_segment(name, 'A scenario name')}")
        return Call("PUT", path, _model(ScenarioConfig), json=_body(spec))

    def delete_scenario(self, name: str) -> Call[None]:
        path = self._p(f"/scenarios/{path_segment(name, 'A scenario name')}")
        return Call("DELETE", path, _none)

    def recommend(
        self, scenario: str, ask: RecommendIn | Json | None = None
    ) -> Call[Recommendation]:
        """Items of a scenario; the event ID is filled in so that a retry is the same ask."""
        body = _body(ask or {})
        body.setdefault("eventId", uuid.uuid4().hex)
        path = self._p(f"/recommendations/{path_segment(scenario, 'A scenario name')}")
        return Call("POST", path, _model(Recommendation), json=body, safe=True)

    # -- the server: named loops ----------------------------------------------------

    def list_loops(self) -> Call[list[LoopInfo]]:
        def read(r: httpx.Response) -> list[LoopInfo]:
            return [LoopInfo.model_validate(x) for x in r.json()]

        return Call("GET", "/loops", read)

    def create_loop(
        self, name: str, spec: LoopSpec | Json | None = None
    ) -> Call[tuple[LoopInfo, bool]]:
        """Create a loop (or find it as specified): its info, and whether it is new."""

        def read(r: httpx.Response) -> tuple[LoopInfo, bool]:
            return LoopInfo.model_validate_json(r.content), r.status_code == 201

        path = f"/loops/{path_segment(name, 'A loop name')}"
        return Call("PUT", path, read, json=_body(spec or {}))

    def put_loop_keys(self, name: str, client_keys: list[str], admin_keys: list[str]) -> Call[None]:
        path = f"/loops/{path_segment(name, 'A loop name')}/keys"
        body = {"clientKeys": client_keys, "adminKeys": admin_keys}
        return Call("PUT", path, _none, json=body)

    def delete_loop(self, name: str) -> Call[None]:
        return Call("DELETE", f"/loops/{path_segment(name, 'A loop name')}", _none)

    def ready(self) -> Call[Json]:
        return Call("GET", "/readyz", _json)


def _retryable(ex: Exception, call: Call[Any]) -> bool:
    if isinstance(ex, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True  # never sent
    if isinstance(ex, httpx.TransportError):
        return call.safe
    return isinstance(ex, BanditloopError) and ex.retry_after is not None  # shed, not done


def _backoff(ex: Exception, attempt: int) -> float:
    after = getattr(ex, "retry_after", None)
    return float(after) if after is not None else min(2.0, 0.1 * 2**attempt)


def _attempts(retries: int) -> Iterator[int]:
    yield from range(retries + 1)


class _Base(Endpoints):
    def __init__(self, loop: str, retries: int) -> None:
        super().__init__(loop)
        self.retries = retries

    def for_loop(self, loop: str) -> Endpoints:
        """The requests of another loop (send them with :meth:`send`)."""
        return Endpoints(loop)

    def _request(self, call: Call[Any]) -> httpx.Request:
        return self.http.build_request(  # type: ignore[attr-defined, no-any-return]
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            params=call.params or None,
            headers=call.headers or None,
            timeout=call.timeout or self.http.timeout,  # type: ignore[attr-defined]
        )


class Client(_Base):
    """Blocking client of one loop (``loop``), and of the server's loops.

    Example::

        with Client("http://127.0.0.1:8080", key="...") as bl:
            answer = bl.send(bl.rank({"actions": [{"id": "a", "features": [{"x": 1}]}]}))
            bl.send(bl.reward(answer.eventId, 1.0))

    The methods of :class:`Endpoints` build a typed :class:`Call`; :meth:`send` sends
    it and returns its answer (``RankResponse`` for a Rank), so that one list of
    endpoints serves both clients.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        loop: str = "default",
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(loop, retries)
        headers = {KEY_HEADER: key} if key else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def send(self, call: Call[T]) -> T:
        """Send a request, retried as the module says; the answer, read, or the error."""
        for attempt in _attempts(self.retries):
            try:
                r = self.http.send(self._request(call))
                if r.status_code >= 400:
                    raise error_of(r)
                return call.read(r)
            except (httpx.TransportError, BanditloopError) as ex:
                if attempt == self.retries or not _retryable(ex, call):
                    raise
                time.sleep(_backoff(ex, attempt))
        raise AssertionError("unreachable")

    def lines(self, call: Call[Any]) -> Iterator[bytes]:
        """The lines of a streamed answer (a log export), never held whole in memory."""
        r = self.http.send(self._request(call), stream=True)
        try:
            if r.status_code >= 400:
                r.read()
                raise error_of(r)
            for line in r.iter_lines():
                yield line.encode()
        finally:
            r.close()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """As :class:`Client`, for asyncio: ``await bl.send(bl.rank(...))``."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        loop: str = "default",
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(loop, retries)
        headers = {KEY_HEADER: key} if key else {}
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    async def send(self, call: Call[T]) -> T:
        for attempt in _attempts(self.retries):
            try:
                r = await self.http.send(self._request(call))
                if r.status_code >= 400:
                    raise error_of(r)
                return call.read(r)
            except (httpx.TransportError, BanditloopError) as ex:
                if attempt == self.retries or not _retryable(ex, call):
                    raise
                await asyncio.sleep(_backoff(ex, attempt))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
