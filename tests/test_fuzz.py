"""Schema fuzzing: schemathesis sends generated requests to every operation of a live server.

Every response must be a non-5xx with a documented status, content type and schema, on
all three base paths (one v1.1 preview stands for the others) and on the named-loop
mounts ``/loops/{loop}/...``, for a loop that exists. Every request carries the server's
admin key, which no fuzzed key change can take away (loop keys only add to it), so the
fuzzer cannot lock itself out. Bounded for `make test`; a release check runs more
examples: `BANDITLOOP_FUZZ_EXAMPLES=200 .venv/bin/pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from conftest import Server
from helpers import TIMEOUT

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("fuzz")

EXAMPLES = os.environ.get("BANDITLOOP_FUZZ_EXAMPLES", "3")
ADMIN_KEY = "fuzz-admin-key"
LOOP = "fuzzed-loop"  # the named loop the /loops/{loop}/... operations are sent to
OPERATIONS = (
    r"^(/personalizer/(v1\.0/|v1\.1-preview\.1/|(?!v1)[^/])"
    r"|/loops/\{loop\}/(personalizer/(?!v1)[^/]|dashboard)"
    r"|/loops$|/loops/\{loop_name\}|/healthz$|/readyz$)"
)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,"
CHECKS += "response_schema_conformance"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys = (f'BANDITLOOP_ADMIN_KEYS=["{ADMIN_KEY}"]',)
    srv = Server(tmp_path_factory.mktemp("fuzz") / "data", extra=keys).start()
    made = httpx.put(
        f"{srv.url}/loops/{LOOP}",
        headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
        json={},
        timeout=60,
    )
    assert made.status_code == 201, made.text
    yield srv
    srv.stop()


def test_the_document_covers_all_base_paths(fuzz_server: Server) -> None:
    paths = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=TIMEOUT).json()["paths"]
    for base in (
        "/personalizer/v1.0/",
        "/personalizer/v1.1-preview.1/",
        "/personalizer/rank",
        "/loops/{loop}/personalizer/rank",
    ):
        assert any(p.startswith(base) for p in paths), base


def test_the_document_is_valid_openapi(fuzz_server: Server) -> None:
    """What client generators need: every path parameter is declared, and so on."""
    doc = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=TIMEOUT).json()
    validate(doc)  # raises on the first error
    named = [op for p, ops in doc["paths"].items() if p.startswith("/loops/{loop}/") for op in ops]
    assert len(named) > 100


def test_every_operation_answers_as_documented(fuzz_server: Server, tmp_path: Path) -> None:
    # schemathesis.toml in the working directory: every {loop} is the loop that exists
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.loop" = "{LOOP}"\n')
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
            # a DSJSON upload (ndjson/gzip) has no serializer here: test_logimport.py
            # sends it hostile files instead
            "--exclude-path-regex",
            "/logs/import$",
            "--header",
            f"Ocp-Apim-Subscription-Key: {ADMIN_KEY}",
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
    summary = tail.split("SUMMARY")[-1]
    assert " passed" in tail and "failures" not in summary, tail
    assert "error" not in summary.lower(), tail  # schema errors are not failures
    assert "Selected: " in tail and "Tested: 0" not in tail, tail
    # the fuzzer neither deleted the named loop nor locked itself out of it
    info = httpx.get(
        f"{fuzz_server.url}/loops/{LOOP}/personalizer/v1.0/configurations/service",
        headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
        timeout=TIMEOUT,
    )
    assert info.status_code == 200, info.text
