"""Helpers shared by the integration tests: base paths, store reads, polling."""

from __future__ import annotations

import io
import itertools
import sqlite3
import time
import zipfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import httpx
import vowpalwabbit

T = TypeVar("T")

#: Every base path a client may use: (path prefix, query string).
BASES: list[tuple[str, str]] = [
    ("/personalizer/v1.0", ""),
    ("/personalizer/v1.1-preview.1", ""),
    ("/personalizer/v1.1-preview.2", ""),
    ("/personalizer/v1.1-preview.3", ""),
    ("/personalizer", "?api-version=2022-09-01-preview"),
    ("/loops/default/personalizer/v1.0", ""),
]
BASE_IDS = ["v1.0", "v1.1-preview.1", "v1.1-preview.2", "v1.1-preview.3", "2022-09", "loops"]

V1 = "/personalizer/v1.0"
#: Every HTTP call of a test may wait this long: a hang detector, not a speed test (a
#: busy CI machine takes seconds for what takes milliseconds here).
TIMEOUT = 120.0
#: A labelled cb_explore_adf example in VW's JSON, as the trainer feeds it.
EXAMPLE = (
    '{"_label_cost":-1,"_label_probability":0.5,"_label_Action":1,"_labelIndex":0,'
    '"FromUrl":[{"a":1}],"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]}'
)


def url(base: tuple[str, str], path: str) -> str:
    prefix, query = base
    return f"{prefix}{path}{query}"


def actions(*ids: str) -> list[dict[str, Any]]:
    """Actions with one distinct categorical feature each (numbers would scale the weights)."""
    return [{"id": a, "features": [{"kind": a}]} for a in ids]


def db_path(data_dir: Path) -> Path:
    return data_dir / "banditloop.db"


#: Data directories whose server keeps its store in PostgreSQL (test_postgres_api.py).
POSTGRES: dict[Path, str] = {}


def query(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read straight from the store of the server on ``data_dir``."""
    if data_dir in POSTGRES:
        from banditloop.store.postgres import PgConnection, connect

        with connect(POSTGRES[data_dir]) as raw:
            return PgConnection(raw).execute(sql, params).fetchall()
    with closing(sqlite3.connect(db_path(data_dir), timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return query(data_dir, sql, params)[0][0]


def poll(
    fn: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Call ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


class Clock:
    """The wall clock plus what the test moved it by (banditloop.clock): a reward
    window closes, a timestamp moves on, when the test says, without sleeping."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += seconds


def pmf_of(response: dict[str, Any]) -> dict[str, float]:
    """Action id -> probability of a RankResponse."""
    return {r["id"]: r["probability"] for r in response["ranking"]}


_loop_names = itertools.count()


def create_loop(server_url: str, prefix: str, policy: str, **configuration: Any) -> str:
    """A fresh named loop on a running server (rewards wait 1 s); returns its name."""
    name = f"{prefix}{next(_loop_names)}"
    r = httpx.put(
        f"{server_url}/loops/{name}",
        json={"policy": policy, "configuration": {"rewardWaitTime": "PT1S", **configuration}},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, r.text
    return name


def vw_model(tmp_path: Path, args: str) -> bytes:
    """A model saved by VW itself (no stamp of ours), after a few examples."""
    ws = vowpalwabbit.Workspace(f"{args} --json --quiet")
    for _ in range(3):
        ex = ws.parse(EXAMPLE)
        ws.learn(ex)
        ws.finish_example(ex)
    ws.save(str(tmp_path / "vw.model"))
    ws.finish()
    return (tmp_path / "vw.model").read_bytes()


def zip_of(members: dict[str, bytes]) -> bytes:
    """A zip archive of these files (name: content)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


# The request of the SDK's own multi-slot test (azure-ai-personalizer's tests).
SDK_ACTIONS = [
    {"id": "NewsArticle", "features": [{"type": "News"}]},
    {"id": "SportsArticle", "features": [{"type": "Sports"}]},
    {"id": "EntertainmentArticle", "features": [{"type": "Entertainment"}]},
]
SDK_SLOTS = [
    {
        "id": "Main Article",
        "baselineAction": "NewsArticle",
        "positionFeatures": [{"Size": "Large", "Position": "Top Middle"}],
        "excludedActions": ["SportsArticle", "EntertainmentArticle"],
    },
    {
        "id": "Side Bar",
        "baselineAction": "SportsArticle",
        "positionFeatures": [{"Size": "Small", "Position": "Bottom Right"}],
        "excludedActions": ["EntertainmentArticle"],
    },
]

#: The service configuration the SDK's own administration tests send.
SDK_CONFIG = {
    "rewardAggregation": "average",
    "modelExportFrequency": "PT3M",
    "defaultReward": 1.0,
    "modelRetrainDays": 2,
    "rewardWaitTime": "PT4H",
    "explorationPercentage": 0.3,
    "logRetentionDays": -1,
    "learningMode": "Online",
}
