"""The HTTP API on the PostgreSQL store: the SQLite suite's API tests, run again.

Every test of the modules below that talks to the app through the ``client``,
``shop`` or ``app_settings`` fixtures is collected here a second time, with the
settings naming a PostgreSQL store (a schema of its own per test).  Skipped, with
a message saying how to run them, where PostgreSQL is not reachable.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import test_admin_api
import test_api_errors
import test_api_events
import test_holdout
import test_items
import test_learning_loop
import test_observability
import test_recommendations
import test_rerank
from banditloop.config import Settings
from helpers import POSTGRES
from test_recommendations import shop  # noqa: F401 - a fixture the copied tests use

MODULES = [
    test_admin_api,
    test_api_errors,
    test_api_events,
    test_holdout,
    test_items,
    test_learning_loop,
    test_observability,
    test_recommendations,
    test_rerank,
]
FIXTURES = {"client", "shop", "app_settings"}  # what makes an app


def _again(test: Callable[..., None], module: ModuleType) -> Callable[..., None]:
    """A copy of ``test`` carrying its module's marks (the original stays as it was)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        test(*args, **kwargs)

    marks = getattr(module, "pytestmark", [])
    for mark in marks if isinstance(marks, list) else [marks]:
        run = mark(run)
    return run


for _module in MODULES:
    for _name, _test in list(vars(_module).items()):
        if _name.startswith("test_") and FIXTURES & set(inspect.signature(_test).parameters):
            globals()[f"test_{_module.__name__[5:]}__{_name[5:]}"] = _again(_test, _module)


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Iterator[Settings]:
    POSTGRES[tmp_path / "data"] = pg_url  # the tests' own reads of the store go there too
    yield Settings(data_dir=tmp_path / "data", store=pg_url, loop={"rewardWaitTime": "PT1S"})
    del POSTGRES[tmp_path / "data"]


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return test_recommendations.make_settings(settings.data_dir, store=settings.store)
