"""Extension: a loop's upstream recommender, asked for the candidates of a Rank.

The connector is the ``recommender`` field of the loop's service configuration.
A Rank request without ``actions`` passes ``recommenderParams``; their values
fill the URL template (URL-encoded), the answer's items are read with JMESPath
expressions, and any failure is a :class:`RecommenderFailure` with a reason
(``timeout``, ``error``, ``malformed``, ``empty``) that the caller answers with
a fallback.
"""

from __future__ import annotations

import asyncio
import math
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote, unquote

import httpx
import jmespath
import orjson
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import BadRequest, FeatureError, RecommenderFailure
from .featurize import check_text, clean_features
from .ids import DOT_SEGMENTS
from .tracing import trace_context

CODE = "InvalidRankRequest"
MAX_ANSWER_BYTES = 4 << 20
MAX_ITEM_ID = 256
#: Placeholders every template may use besides the request's recommenderParams.
BUILTINS = ("topK",)

Param = str | int | float | bool


class FallbackConfig(BaseModel):
    """What to rank when the recommender fails: the loop's most rewarded items, or a list."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source: Literal["topRewarded", "static"] = Field(
        "topRewarded",
        description="topRewarded: the items with the most reward in the loop's own logs "
        "(then `items`); static: `items` only.",
    )
    items: list[str] = Field(default_factory=list, description="Static fallback item ids.")
    by: Literal["total", "mean"] = Field("total", description="Order by total or mean reward.")
    minEvents: int = Field(1, ge=1, le=10**9, description="Items shown fewer times are left out.")
    windowHours: float = Field(
        168.0, gt=0, le=24 * 3650, description="How far back the logs are read."
    )
    cacheSeconds: float = Field(
        60.0, ge=0, le=86400, description="How long the computed list is reused."
    )


class RecommenderConfig(BaseModel):
    """An HTTP recommender whose top-K items a Rank request re-ranks."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = Field(
        description="URL template, e.g. http://recs:8000/recs?user={userId}&n={topK}; "
        "values come from recommenderParams, URL-encoded."
    )
    method: Literal["GET", "POST"] = Field(
        "GET", description="POST sends recommenderParams as the JSON body."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every call.")
    timeoutSeconds: float = Field(0.25, gt=0, le=30, description="Whole call, connect to body.")
    topK: int = Field(10, ge=1, le=50, description="Candidates kept from the answer.")
    items: str = Field("items", description="JMESPath of the item list in the answer.")
    id: str = Field("id", description="JMESPath of an item's id, within the item.")
    score: str | None = Field("score", description="JMESPath of an item's score, or null.")
    features: str | None = Field(
        "features", description="JMESPath of an item's features (a list of objects), or null."
    )
    fallback: FallbackConfig = Field(default_factory=lambda: FallbackConfig.model_validate({}))

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        head, sep, rest = url.partition("://")
        if not sep or head.lower() not in ("http", "https"):
            raise ValueError("the recommender url must start with http:// or https://")
        host = rest.split("/", 1)[0].split("?", 1)[0]
        if "{" in host or "}" in host:
            raise ValueError("placeholders may not appear in the recommender's host")
        if not host:
            raise ValueError("the recommender url has no host")
        placeholders(url)
        return url

    @field_validator("items", "id", "score", "features")
    @classmethod
    def _check_path(cls, path: str | None) -> str | None:
        if path is not None:
            try:
                _compiled(path)
            except JMESPathError as ex:
                raise ValueError(f"not a JMESPath expression: {ex}") from None
        return path


@lru_cache(maxsize=256)
def _compiled(path: str) -> Any:
    return jmespath.compile(path)


def search(path: str, data: Any) -> Any:
    return _compiled(path).search(data)


def placeholders(template: str) -> list[str]:
    """The names in a URL template; each must be a plain name (no ``.attr`` or ``[i]``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as ex:
        raise ValueError(f"the url template is malformed: {ex}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"url placeholder {{{name}}} must be a plain name like {{userId}}")
        names.append(name)
    return names


def _text(value: Param) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def expand(template: str, params: dict[str, Param], top_k: int) -> str:
    """The URL for a request: each placeholder replaced by its URL-encoded value.

    A client's params cannot set the built-in ones (``topK``), and a value that goes
    into the URL's path cannot be ``.`` or ``..`` or hold a ``/`` or ``\\``: HTTP
    clients and proxies would resolve them into another path of the recommender."""
    clash = sorted(set(params) & set(BUILTINS))
    if clash:
        raise BadRequest(
            f"recommenderParams may not set {', '.join(clash)}: the connector sets it.", CODE
        )
    values: dict[str, Param] = {**params, "topK": top_k}
    out = []
    in_path = True
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        in_path = in_path and "?" not in literal and "#" not in literal
        if name is None:
            continue
        if name not in values:
            raise BadRequest(f"recommenderParams must have a value for {name!r}.", CODE)
        text = check_text(_text(values[name]), CODE)
        if in_path and (text in DOT_SEGMENTS or "/" in text or "\\" in text):
            raise BadRequest(
                f"recommenderParams {name!r} goes into the recommender's path: it may not be "
                "'.' or '..' nor contain '/' or '\\'.",
                CODE,
            )
        out.append(quote(text, safe=""))
    url = "".join(out)
    path = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    if any(unquote(segment) in DOT_SEGMENTS for segment in path.split("/")[1:]):
        raise BadRequest("recommenderParams would make a '.' or '..' path segment.", CODE)
    return url


@dataclass(frozen=True)
class Candidate:
    """An item to rank: its id, the upstream score, and features (None: none given)."""

    id: str
    score: float | None = None
    features: list[Any] | None = None


async def fetch(
    http: httpx.AsyncClient, cfg: RecommenderConfig, params: dict[str, Param]
) -> list[Candidate]:
    """Call the recommender and read its items, in its order."""
    url = expand(cfg.url, params, cfg.topK)
    body = bytearray()
    try:
        async with asyncio.timeout(cfg.timeoutSeconds):
            trace = trace_context.get()  # the caller's W3C trace context, passed on
            headers = {**cfg.headers, **trace} if trace else cfg.headers
            kw: dict[str, Any] = {"headers": headers, "timeout": cfg.timeoutSeconds}
            if cfg.method == "POST":
                kw["json"] = params
            async with http.stream(cfg.method, url, **kw) as r:
                if not 200 <= r.status_code < 300:
                    raise RecommenderFailure("error", f"HTTP {r.status_code}")
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise RecommenderFailure("malformed", "the answer is too large")
    except (TimeoutError, httpx.TimeoutException):
        raise RecommenderFailure("timeout", f"no answer within {cfg.timeoutSeconds} s") from None
    except httpx.HTTPError as ex:
        raise RecommenderFailure("error", f"{type(ex).__name__}: {ex}") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RecommenderFailure("malformed", "the answer is not JSON") from None
    return read_answer(cfg, data)


def read_answer(cfg: RecommenderConfig, data: Any) -> list[Candidate]:
    """Candidates from a decoded answer; items without a usable id are skipped."""
    try:
        items = search(cfg.items, data)
    except JMESPathError as ex:
        raise RecommenderFailure("malformed", f"items: {ex}") from None
    if items is None or items == []:
        raise RecommenderFailure("empty", "the answer has no items")
    if not isinstance(items, list):
        raise RecommenderFailure("malformed", f"{cfg.items!r} is not a list")
    out: list[Candidate] = []
    seen: set[str] = set()
    for item in items:
        try:
            candidate = _candidate(cfg, item)
        except (JMESPathError, FeatureError):
            continue
        if candidate is not None and candidate.id not in seen:
            seen.add(candidate.id)
            out.append(candidate)
    if not out:
        raise RecommenderFailure("malformed", "no item has a usable id")
    return out


def _candidate(cfg: RecommenderConfig, item: Any) -> Candidate | None:
    ident = search(cfg.id, item)
    if isinstance(ident, bool) or not isinstance(ident, str | int):
        return None
    ident = str(ident)
    if not ident or len(ident) > MAX_ITEM_ID:
        return None
    check_text(ident, CODE)
    score = search(cfg.score, item) if cfg.score else None
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        score = None
    features: list[dict[str, Any]] | None = None
    raw = search(cfg.features, item) if cfg.features else None
    if isinstance(raw, dict):
        raw = [raw]
    if isinstance(raw, list):
        try:
            features = clean_features(raw, CODE) or None
        except FeatureError:
            features = None  # unusable features: the catalogue's are used instead
    return Candidate(ident, float(score) if score is not None else None, features)
