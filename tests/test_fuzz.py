"""Schema fuzzing: schemathesis sends generated requests to every operation of a live server.

Every response must be a non-5xx with a documented status, content type and schema, on
all three base paths (one v1.1 preview stands for the others; /loops/{loop}/... mounts
are the same routes). Bounded for `make test`; a release check runs more examples:
`BANDITLOOP_FUZZ_EXAMPLES=200 .venv/bin/pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Server

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("fuzz")

EXAMPLES = os.environ.get("BANDITLOOP_FUZZ_EXAMPLES", "3")
OPERATIONS = (
    r"^(/personalizer/(v1\.0/|v1\.1-preview\.1/|(?!v1)[^/])|/loops$|/loops/\{loop_name\}$"
    r"|/healthz$|/readyz$)"
)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,"
CHECKS += "response_schema_conformance"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fuzz") / "data").start()
    yield srv
    srv.stop()


def test_the_document_covers_all_three_base_paths(fuzz_server: Server) -> None:
    paths = httpx.get(f"{fuzz_server.url}/openapi.json").json()["paths"]
    for base in ("/personalizer/v1.0/", "/personalizer/v1.1-preview.1/", "/personalizer/rank"):
        assert any(p.startswith(base) for p in paths), base


def test_every_operation_answers_as_documented(fuzz_server: Server, tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "schemathesis"
    proc = subprocess.run(
        [
            str(cli),
            "run",
            f"{fuzz_server.url}/openapi.json",
            "--max-examples",
            EXAMPLES,
            "--checks",
            CHECKS,
            "--include-path-regex",
            OPERATIONS,
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    tail = proc.stdout[-6000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failures" not in tail.split("SUMMARY")[-1], tail
