"""The threat model of docs/security.md, probed the way a hostile admin or a careless
operator would (issue 22): allow-listed VW options, model files checked before they
load, imports that cannot poison the loop, path-safe IDs, forget that forgets, admin
inputs that never give a 500.  Real SQLite, real VW, real HTTP; probes that could start
VW or write files check that the host is unchanged.  (Keys: test_auth.py.)"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mmh3
import orjson
import pytest
import vowpalwabbit
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from banditloop import vwcheck
from banditloop.app import create_app
from banditloop.cli import main
from banditloop.config import Settings
from banditloop.errors import BadRequest
from banditloop.evaluation.jobs import JOBS, JobRunner
from banditloop.registry import Registry
from banditloop.store import SqliteStore
from banditloop.store.base import Decision, JobRecord, ModelRecord, SlotChoice
from conftest import Server, free_port
from helpers import EXAMPLE, TIMEOUT, V1, actions, poll, query, scalar, vw_model, zip_of
from recommender_server import recommender

POLICY = f"{V1}/configurations/policy"
SERVICE = f"{V1}/configurations/service"
MODEL = f"{V1}/model"
OCTET = {"Content-Type": "application/octet-stream"}
#: The former deny-list: each of these still gets a 400, now from the allow-list.
FORMERLY_FORBIDDEN = [
    "-d",
    "--data",
    "-f",
    "--final_regressor",
    "-i",
    "--initial_regressor",
    "-c",
    "--cache",
    "--cache_file",
    "--readable_model",
    "--invert_hash",
    "--daemon",
    "--port",
    "-p",
    "--predictions",
    "-r",
    "--raw_predictions",
    "--pid_file",
    "--port_file",
    "--feature_mask",
    "--save_per_pass",
    "--output_feature_regularizer_binary",
    "--output_feature_regularizer_text",
    "--input_feature_regularizer",
    "--dictionary",
    "--dictionary_path",
    "--audit_regressor",
    "--extra_metrics",
    "--json",
    "--dsjson",
    "--passes",
    "--help",
    "-h",
    "--onethread",
    "--num_children",
    "--span_server",
    "--unique_id",
    "--total",
    "--node",
    "--sendto",
    "--progress",
    "-P",
    "--flatbuffer",
    "--compressed",
    "--db",
    "--id",
    "--preserve_performance_counters",
    "--kill_cache",
    "-k",
    "--no_stdin",
    "--version",
    "--predict_only_model",
    "--log_output",
    "--limit_output",
]


# -- the host: files, sockets, processes --------------------------------------------


def _listening(port: int) -> list[int]:
    """Socket inodes listening on a TCP port (IPv4 and IPv6) in this network namespace."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for row in fh.readlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    found.append(int(cols[9]))
    return found


def _owners(inodes: list[int]) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                    pids.append(int(pid))
    return pids


def _processes_mentioning(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a path unique to the test)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
            if marker.encode() in fh.read():
                found.append(int(pid))
    return found


@dataclass
class Host:
    """What a probe must leave as it found it: files, a port, processes, the cwd."""

    paths: list[Path]
    port: int
    marker: str
    cwd: Path
    before: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.before = sorted(os.listdir(self.cwd))
        assert not any(p.exists() for p in self.paths)
        assert not _listening(self.port)

    def assert_unchanged(self) -> None:
        daemons = _owners(_listening(self.port)) + _processes_mentioning(self.marker)
        for pid in daemons:  # started by this probe (against a server that let it)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not daemons, "the probe left a process running"
        assert [p for p in self.paths if p.exists()] == []
        assert sorted(os.listdir(self.cwd)) == self.before


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a check child inherits it: nothing may appear there
    target = tmp_path / "written-by-vw"
    h = Host([target, target.with_suffix(".json"), tmp_path / "pid"], free_port(), str(target), cwd)
    yield h
    h.assert_unchanged()


def _error(r: httpx.Response, code: str) -> str:
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code, r.json()
    return str(r.json()["error"]["message"])


# -- policies: an allow-list --------------------------------------------------------


def test_every_formerly_forbidden_option_is_refused(client: TestClient) -> None:
    before = client.get(POLICY).json()
    for option in FORMERLY_FORBIDDEN:
        for args in (f"{option} x", f"{option}=x"):
            r = client.put(POLICY, json={"name": "p", "arguments": f"--cb_explore_adf {args}"})
            _error(r, "InvalidPolicyConfiguration")
    assert client.get(POLICY).json() == before


WRITERS = [
    "--dump_json_weights_experimental {f}",
    "--dump_json_weights_experimental={f}",
    "--epsilon_decay_audit {f}",
    "--dump_json_weights_include_feature_names_experimental --dump_json_weights_experimental {f}",
    "--dump_json_weights_experimental",  # VW took the --json after it as the file name
    "--audit",
    "--invert_hash {f}",
    "--readable_model {f}",
]


@pytest.mark.parametrize("option", WRITERS)
def test_policy_options_that_write_or_print_are_refused_everywhere(
    client: TestClient, host: Host, option: str
) -> None:
    """PUT /configurations/policy, a new loop's policy and evaluation policies: a 400
    naming the option, and no file anywhere (an existing one is not overwritten)."""
    target = host.paths[0]
    args = "--cb_explore_adf --epsilon 0.2 " + option.format(f=target)
    name = option.split()[0].split("=")[0]
    before = client.get(POLICY).json()
    message = _error(
        client.put(POLICY, json={"name": "p", "arguments": args}), "InvalidPolicyConfiguration"
    )
    assert f"{name} is not allowed" in message
    assert client.get(POLICY).json() == before
    r = client.put("/loops/probe", json={"policy": args})
    assert r.status_code == 400 and "not allowed" in r.json()["error"]["message"], r.text
    evaluation = {"name": "e", "policies": [{"name": "x", "arguments": args}]}
    r = client.post(f"{V1}/evaluations", json=evaluation)
    assert r.status_code == 400 and "not allowed" in r.json()["error"]["message"], r.text


def test_audit_prints_no_feature_values(
    client: TestClient, capfd: pytest.CaptureFixture[str]
) -> None:
    r = client.put(POLICY, json={"name": "p", "arguments": "--cb_explore_adf --audit"})
    _error(r, "InvalidPolicyConfiguration")
    ctx = [{"email": "alice@example.com"}]
    assert client.post(f"{V1}/rank", json={"contextFeatures": ctx, "actions": actions("a", "b")})
    out, err = capfd.readouterr()
    assert "alice@example.com" not in out + err


def test_apply_from_evaluation_checks_the_stored_arguments(
    client: TestClient, settings: Settings, host: Host
) -> None:
    """A finished evaluation's policy (e.g. stored by an older version) is checked again
    when applied."""
    store: SqliteStore = client.app.state.registry.store  # type: ignore[attr-defined]
    args = f"--cb_explore_adf --dump_json_weights_experimental {host.paths[0]}"
    result = {"policies": [{"name": "x", "arguments": args, "policySource": "Custom"}]}
    job = JobRecord("old", time.time(), "Succeeded", {"name": "old"}, result)
    assert store.put_job("default", "evaluation", job).result()
    before = client.get(POLICY).json()
    r = client.post(
        f"{V1}/configurations/applyFromEvaluation",
        json={"evaluationId": "old", "policyName": "x"},
    )
    assert "not allowed" in _error(r, "InvalidPolicyConfiguration")
    assert client.get(POLICY).json() == before


CONFINED = """
import os, resource
print(os.readlink("/proc/self/ns/net"), resource.getrlimit(resource.RLIMIT_AS)[0],
      resource.getrlimit(resource.RLIMIT_FSIZE)[0], resource.getrlimit(resource.RLIMIT_CORE)[0])
"""


def test_the_check_child_is_confined() -> None:
    """What vwcheck's child runs under: memory, file size and core caps, and a network
    namespace of its own where the system allows one (root or user namespaces)."""
    out = subprocess.run(
        [sys.executable, "-c", CONFINED],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: vwcheck._confine(1 << 26),
    ).stdout.split()
    assert [int(x) for x in out[1:]] == [vwcheck.MEMORY_CAP, 1 << 26, 0]
    if out[0] == os.readlink("/proc/self/ns/net"):
        pytest.skip("this system allows no network namespace for an unprivileged child")


# -- models: checked before they load ---------------------------------------------


def with_header(blob: bytes, options: str | None = None, ident: str | None = None) -> bytes:
    """A VW model with another option string (or id) in its header and a valid checksum:
    a hand-made hostile model. Written here from VW's format, independently of
    banditloop's own reader."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return blob[pos - n : pos]

    def text() -> bytes:
        return take(struct.unpack("<I", take(4))[0])

    version = text()
    old_id = text()
    fixed = take(1 + 4 * 4)  # 'm', min, max, bits, lda
    ngram = take(4)
    skip = take(4)
    old_options = text()
    take(8)  # the checksum
    new_id = old_id if ident is None else ident.encode() + b"\0"
    new_options = old_options if options is None else options.encode() + b"\0"
    pieces = [struct.pack("<I", len(new_id)), new_id, fixed[:1]]
    pieces += [fixed[i : i + 4] for i in range(1, 17, 4)] + [ngram, skip]
    pieces += [struct.pack("<I", len(new_options)), new_options]
    checksum = 0
    for piece in pieces:
        checksum = mmh3.hash(piece, checksum, signed=False)
    head = struct.pack("<I", len(version)) + version
    return head + b"".join(pieces) + struct.pack("<II", 4, checksum) + blob[pos:]


def _options(blob: bytes) -> str:
    at = blob.index(b" --cb_adf")
    return blob[at : blob.index(b"\0", at)].decode()


@pytest.mark.parametrize(
    "extra",
    [
        "--readable_model {f}",
        "--final_regressor {f}",
        "--dump_json_weights_experimental {f}",
        "--invert_hash {f}",
        "--pid_file {pid} --port {port} --num_children 1",
        "--daemon --port {port}",
    ],
)
def test_model_header_options_are_checked_before_any_vw_loads_it(
    client: TestClient, host: Host, extra: str
) -> None:
    good = client.get(MODEL).content
    policy = client.get(POLICY).json()
    options = extra.format(f=host.paths[0], pid=host.paths[2], port=host.port)
    hostile = with_header(good, options=_options(good) + " " + options)
    message = _error(client.put(MODEL, content=hostile, headers=OCTET), "InvalidModelImportFormat")
    assert "not allowed" in message
    assert client.get(MODEL).content == good
    assert client.get(POLICY).json() == policy
    # the same options in the id field, which VW also adds to the options
    hostile = with_header(good, ident=f"x {options}")
    _error(client.put(MODEL, content=hostile, headers=OCTET), "InvalidModelImportFormat")
    assert client.get(MODEL).content == good


def test_a_model_of_another_policy_is_refused_naming_both(
    client: TestClient, tmp_path: Path
) -> None:
    """GET /configurations/policy shows what the model runs with: a model whose header
    options differ is refused, not loaded with its own options."""
    good = client.get(MODEL).content
    policy = client.get(POLICY).json()
    other = vw_model(tmp_path, "--cb_explore_adf --epsilon 0.2 --cb_type ips -q ab")
    message = _error(client.put(MODEL, content=other, headers=OCTET), "InvalidModelImportFormat")
    assert "--cb_type ips" in message and "--synthcover" in message
    assert client.get(POLICY).json() == policy
    assert client.get(MODEL).content == good
    # with the model's policy set first, it is imported
    ok = {"name": "ips", "arguments": "--cb_explore_adf --cb_type ips -q ab --epsilon 0.2"}
    assert client.put(POLICY, json=ok).status_code == 200
    assert client.put(MODEL, content=other, headers=OCTET).status_code == 204


def _train(client: TestClient, n: int = 30) -> bytes:
    for i in range(n):
        body = {"contextFeatures": [{"u": i % 3}], "actions": actions("a", "b", "c")}
        r = client.post(f"{V1}/rank", json={**body, "eventId": f"t{i}"})
        value = float(r.json()["rewardActionId"] == "a")
        client.post(f"{V1}/events/t{i}/reward", json={"value": value})
    poll(lambda: client.get(MODEL).content != b"" and _learned(client) >= n, timeout=20)
    return client.get(MODEL).content


def _learned(client: TestClient) -> int:
    loop = client.app.state.registry.loops["default"]  # type: ignore[attr-defined]
    return int(loop.trainer.events_learned)


def test_every_truncation_of_a_model_is_refused(client: TestClient) -> None:
    good = _train(client)
    for n in range(len(good) - 1, 0, -1):
        r = client.put(MODEL, content=good[:n], headers=OCTET)
        assert r.status_code == 400, (n, len(good))
    assert client.get(MODEL).content == good


def test_a_truncated_foreign_model_is_refused(client: TestClient, tmp_path: Path) -> None:
    """A model from elsewhere carries no digest: VW loads it and writes it back, and a
    cut shows as a difference."""
    args = client.app.state.registry.loops["default"].live.args  # type: ignore[attr-defined]
    blob = vw_model(tmp_path, args)
    assert client.put(MODEL, content=blob, headers=OCTET).status_code == 204
    for cut in (3, 7, 20):
        r = client.put(MODEL, content=blob[:-cut], headers=OCTET)
        assert "damaged or truncated" in _error(r, "InvalidModelImportFormat")


def test_signed_archives_need_every_member_and_the_right_digest(client: TestClient) -> None:
    good = client.get(MODEL).content
    for members in (
        {"model.vw": good, "sha512_signature.bin": b"\0" * 64},  # no signer, wrong digest
        {"model.vw": good, "signer.der": b""},  # no digest
        {"model.vw": good, "sha512_signature.bin": b"\0" * 64, "signer.der": b""},
    ):
        r = client.put(MODEL, content=zip_of(members), headers=OCTET)
        _error(r, "InvalidModelImportSignature")
    assert client.get(MODEL).content == good


def test_a_zip_bomb_is_refused_before_it_is_unpacked(client: TestClient) -> None:
    """A small zip whose model.vw unpacks to 64 MB: refused from the zip's directory,
    and the server allocates nowhere near the unpacked size."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("model.vw", "w") as fh:
            for _ in range(64):
                fh.write(bytes(1 << 20))
        zf.writestr("sha512_signature.bin", b"\0" * 64)
        zf.writestr("signer.der", b"")
    bomb = out.getvalue()
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        r = client.put(MODEL, content=bomb, headers=OCTET)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _error(r, "InvalidModelImportFormat")
    assert peak < 16 << 20, peak


def test_a_hostile_live_model_is_not_loaded_at_start_up(tmp_path: Path, host: Host) -> None:
    """A stored model whose header asks VW to write a file (written before the checks, or
    by hand) is quarantined at start-up, and the loop starts on an empty model."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    with TestClient(create_app(settings)) as c:
        assert c.delete(MODEL).status_code == 204  # a saved model to fall back to
        good = c.get(MODEL).content
    store = SqliteStore(data)
    try:
        hostile = with_header(good, _options(good) + f" --readable_model {host.paths[0]}")
        latest = store.latest_model("default")
        assert latest is not None
        record = ModelRecord("default", 0, time.time(), latest.policy, 0, latest.born, blob=hostile)
        assert store.save_model(record, None).result() is not None
    finally:
        store.close()
    with TestClient(create_app(settings)) as c:
        assert c.post(f"{V1}/rank", json={"actions": actions("a", "b")}).status_code == 201
        assert c.get(MODEL).content != hostile
    assert list((data / "quarantine").iterdir())


# -- jobs: isolated ------------------------------------------------------------------


def crash_vw(db: str, loop: str, request: dict[str, Any], policy: str) -> dict[str, Any]:
    """A job that crashes VW for real: --bag 0, which the allow-list now refuses."""
    ws = vowpalwabbit.Workspace("--cb_explore_adf --bag 0 --json --quiet")
    for _ in range(3):
        ex = ws.parse(EXAMPLE)
        ws.predict(ex)
        ws.learn(ex)
        ws.finish_example(ex)
    return {}


def test_a_crashing_job_fails_alone_and_the_next_one_runs(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    runner = JobRunner({**JOBS, "crash": crash_vw})
    done: list[JobRecord] = []
    try:
        request = {"start": 0.0, "end": time.time(), "policies": []}
        jobs = [
            ("crash", JobRecord("c", 0, "Running", {})),
            ("evaluation", JobRecord("e", 0, "Running", request)),
        ]
        futures = [
            runner.submit(kind, store.location, "default", job, "--cb_explore_adf", done.append)
            for kind, job in jobs
        ]
        _, pending = concurrent.futures.wait(futures, timeout=120)
        assert not pending, "a job neither finished nor failed within 120 s"
    finally:
        runner.close()
        store.close()
    by_id = {j.id: j for j in done}
    assert by_id["c"].status == "Failed"
    assert "process died" in by_id["c"].result["error"]
    assert by_id["e"].status == "Succeeded", by_id["e"].result


def sleep_job(db: str, loop: str, request: dict[str, Any], policy: str) -> dict[str, Any]:
    """A job that writes its process ID to ``db`` and runs for ten minutes."""
    Path(db).write_text(str(os.getpid()))
    time.sleep(600)
    return {}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended


def test_a_job_process_ends_when_the_server_is_killed(tmp_path: Path) -> None:
    """kill -9 of the server leaves no job process behind (it held 300 MB, forever)."""
    pid_file = tmp_path / "job.pid"
    script = textwrap.dedent(f"""
        import time
        from banditloop.evaluation.jobs import JobRunner
        from banditloop.store.base import JobRecord
        from test_security import sleep_job
        runner = JobRunner({{"sleep": sleep_job}})
        record = JobRecord("j", 0.0, "Running", {{}})
        runner.submit("sleep", {str(pid_file)!r}, "loop", record, "", lambda r: None)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    server = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        job = int(poll(lambda: pid_file.exists() and pid_file.read_text(), 120, "the job"))
        assert _alive(job)
    finally:
        server.kill()
        server.wait()
    poll(lambda: not _alive(job), 30, "the job's process to end")


def test_an_evaluation_policy_that_crashes_vw_is_refused(client: TestClient) -> None:
    bad = {"name": "b", "policies": [{"name": "x", "arguments": "--cb_explore_adf --bag 0"}]}
    r = client.post(f"{V1}/evaluations", json=bad)
    assert "--bag" in _error(r, "InvalidPolicyConfiguration")
    r = client.post(f"{V1}/evaluations", json={"name": "fine"})
    assert r.status_code == 201, r.text
    evaluation = r.headers["Location"].rsplit("/", 1)[-1]

    def status() -> str | None:
        s = client.get(f"{V1}/evaluations/{evaluation}").json().get("status")
        return s if s in ("completed", "failed") else None

    assert poll(status, timeout=60) == "completed"


# -- import: validated like the API ----------------------------------------------


def dsjson(event_id: str = "imp-1", reward: float = 1.0) -> dict[str, Any]:
    """A single-slot DSJSON line as banditloop and Azure write them."""
    multi = [{"_tag": a, "i": {"constant": 1, "id": a}, "j": [{"k": a}]} for a in ("a", "b")]
    return {
        "_label_cost": -reward,
        "_label_probability": 0.5,
        "_label_Action": 1,
        "_labelIndex": 0,
        "o": [{"v": reward, "EventId": event_id, "ActionTaken": False}],
        "Timestamp": "2024-01-02T03:04:05.0000000Z",
        "Version": "1",
        "EventId": event_id,
        "a": [1, 2],
        "c": {"FromUrl": [{"user": "u1"}], "_multi": multi},
        "p": [0.5, 0.5],
        "VWState": {"m": "1"},
    }


def mutated(path: str, value: Any, event_id: str = "imp-2") -> dict[str, Any]:
    return mutated_obj(dsjson(event_id), path, value)


POISON = {
    "a with a string": ("a", [1, "2"]),
    "o not objects": ("o", [5]),
    "reward a string": ("o.0.v", "abc"),
    "p with a string": ("p", ["x", 0.5]),
    "reward 'nan'": ("o.0.v", "nan"),
    "reward 'inf'": ("o.0.v", "inf"),
    "reward 1e308": ("o.0.v", 1e308),
    "p negative": ("p", [-0.5, 1.5]),
    "p zero": ("p", [0, 1]),
    "pmf not summing to 1": ("p", [0.5, 0.9]),
    "a not a permutation": ("a", [1, 1]),
    "nested _multi": ("c._multi.0._multi", [{"j": [{"z": 1}]}]),
    "string _label_cost in c": ("c._label_cost", "x"),
    "_text in c": ("c._text", "a b c"),
    "label cost a string": ("_label_cost", "1"),
    "event id ..": ("EventId", ".."),
    "event id with /": ("EventId", "a/b"),
    "timestamp a number": ("Timestamp", 5),
    "feature beyond float32": ("c.FromUrl.0.user", 1e300),
    "a list in a feature list": ("c.FromUrl.0", []),  # VW cannot parse it
    "non-ASCII namespace": ("c.FromUrl.0.ümlaut", {"x": 1}),  # corrupts VW's memory
    "object nested too deep": ("c.FromUrl.0.u", {"a": {"b": {"c": {"d": {"e": 1}}}}}),
}


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Registry]:
    """The default loop on a data directory, trained by hand (``trainer.step``)."""
    settings = Settings(data_dir=tmp_path / "data")
    store = SqliteStore(settings.data_dir)
    registry = Registry(store, settings, train=False)
    registry.open()
    yield registry
    registry.close()
    store.close()


def _lines(*objs: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(o) + b"\n" for o in objs]


@pytest.mark.parametrize("case", POISON)
def test_import_refuses_a_poisoned_line_and_stores_nothing(tmp_path: Path, case: str) -> None:
    path, value = POISON[case]
    src = tmp_path / "logs.json"
    src.write_bytes(b"".join(_lines(dsjson(), mutated(path, value))))
    data = tmp_path / "data"
    res = CliRunner().invoke(main, ["logs", "import", "--data-dir", str(data), str(src)])
    assert res.exit_code == 1
    assert "logs.json line 2: " in res.output, res.output
    assert scalar(data, "SELECT count(*) FROM decisions") == 0
    assert scalar(data, "SELECT count(*) FROM rewards") == 0


def _drain(registry: Registry) -> None:
    loop = registry.get("default")
    while loop.trainer.step(now=time.time() + 1e6):
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [
    "EventId", "Timestamp", "a", "a.0", "p", "p.0", "p.1", "o", "o.0", "o.0.v", "c", "c.FromUrl",
    "c.FromUrl.0", "c.FromUrl.0.user", "c._multi", "c._multi.0", "c._multi.0.j", "c._multi.1.i",
    "c._multi.0._tag", "_label_cost", "_label_probability", "_label_Action", "_labelIndex",
    "_skipLearn", "VWState", "VWState.m",
]  # fmt: skip


@hyp_settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), JSON), min_size=1, max_size=3))
def test_whatever_a_line_holds_it_is_refused_or_learned(
    offline: Registry, changes: list[tuple[str, Any]]
) -> None:
    """Property: a mutated line either fails the import (BadRequest, line number, nothing
    stored) or is stored and then learned by the trainer without a failure."""
    loop = offline.get("default")
    failed = loop.trainer.stats.failed
    before = scalar(offline.settings.data_dir, "SELECT count(*) FROM decisions")
    event_id = f"h{before}-{time.monotonic_ns()}"
    obj = dsjson(event_id)
    for path, value in changes:
        with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
            obj = mutated_obj(obj, path, value)
    try:
        lines = _lines(dsjson(event_id + "-ok"), obj)
    except orjson.JSONEncodeError:
        return  # not JSON at all (NaN, big integers): cannot be in a file
    try:
        loop.import_lines(lines)
    except BadRequest as ex:
        assert ex.message.startswith("line 2: "), ex.message
        assert scalar(offline.settings.data_dir, "SELECT count(*) FROM decisions") == before
        return
    _drain(offline)
    assert loop.trainer.stats.failed == failed


def mutated_obj(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *head, last = path.split(".")
    node: Any = out
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def test_the_trainer_marks_an_unlearnable_event_and_moves_on(offline: Registry) -> None:
    """An event VW cannot learn (here: stored with a nested _multi, as an import of an
    older version allowed) is marked failed, counted, and the events after it learned."""
    loop = offline.get("default")
    store = offline.store
    example = orjson.dumps(dsjson()["c"]).decode()
    bad = orjson.loads(example)
    bad["_multi"][0]["_multi"] = [{"j": [{"z": 1}]}]
    t = time.time() - 100
    for i, ex in enumerate([orjson.dumps(bad).decode(), example, example]):
        d = Decision(
            loop="default",
            event_id=f"u{i}",
            ts=t + i,
            close_at=t + i,
            deferred=False,
            request_hash="h",
            example=ex,
            action_ids=["a", "b"],
            slots=[SlotChoice(None, [0, 1], [0.5, 0.5], 0, 0, 0)],
            response=b"{}",
            model_version="0",
        )
        assert store.append_decision(d).result() is None
    _drain(offline)
    assert loop.trainer.stats.failed == 1
    outcomes = dict(query(offline.settings.data_dir, "SELECT event_id, outcome FROM decisions"))
    assert "e" in json.loads(outcomes["u0"])
    assert [json.loads(outcomes[f"u{i}"])["t"] for i in (1, 2)] == [[0.0], [0.0]]
    assert loop.trainer.events_learned == 2


def test_failed_events_show_on_metrics_and_the_dashboard(client: TestClient) -> None:
    loop = client.app.state.registry.loops["default"]  # type: ignore[attr-defined]
    example = orjson.loads(orjson.dumps(dsjson()["c"]))
    example["_multi"][1]["_multi"] = [{}]
    d = Decision(
        loop="default",
        event_id="bad",
        ts=time.time() - 5,
        close_at=time.time() - 5,
        deferred=False,
        request_hash="h",
        example=orjson.dumps(example).decode(),
        action_ids=["a", "b"],
        slots=[SlotChoice(None, [0, 1], [0.5, 0.5], 0, 0, 0)],
        response=b"{}",
        model_version="0",
    )
    before = _failed_metric(client)
    assert loop.store.append_decision(d).result() is None
    poll(lambda: loop.trainer.stats.failed == 1, timeout=20, what="the event marked failed")
    with loop.live.lock:  # the trainer's step, which stores the mark, has ended
        pass
    assert _failed_metric(client) == before + 1
    assert client.get("/dashboard/data").json()["totals"]["failed"] == 1


def _failed_metric(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('banditloop_events_failed_total{loop="default"}'):
            return float(line.split()[-1])
    return 0.0


# -- IDs: path-safe ---------------------------------------------------------------


@pytest.mark.parametrize("event_id", [".", "..", "a/b", "../x"])
def test_rank_refuses_event_ids_that_are_not_path_safe(client: TestClient, event_id: str) -> None:
    r = client.post(f"{V1}/rank", json={"actions": actions("a", "b"), "eventId": event_id})
    _error(r, "InvalidRankRequest")


def test_cli_deletes_exactly_the_event_it_names(server: Server) -> None:
    with httpx.Client(base_url=server.url + V1, timeout=TIMEOUT) as http:
        for eid in ("one", "two", "a b?c#d%2F"):
            r = http.post("/rank", json={"actions": actions("a", "b"), "eventId": eid})
            assert r.status_code == 201, r.text
    url = ["--url", server.url]
    res = CliRunner().invoke(main, ["logs", "delete", *url, "--event-id", ".."])
    assert res.exit_code == 1 and "may not be" in res.output, res.output
    res = CliRunner().invoke(main, ["logs", "delete", *url, "--event-id", "", "--yes"])
    assert res.exit_code == 1, res.output
    assert scalar(server.data_dir, "SELECT count(*) FROM decisions") == 3
    res = CliRunner().invoke(main, ["logs", "delete", *url, "--event-id", "a b?c#d%2F"])
    assert res.exit_code == 0 and "deleted 1 events" in res.output, res.output
    ids = [r[0] for r in query(server.data_dir, "SELECT event_id FROM decisions ORDER BY seq")]
    assert ids == ["one", "two"]


def test_connector_params_cannot_change_the_path_or_the_built_ins(client: TestClient) -> None:
    items = [{"id": f"p{i}"} for i in range(5)]
    with recommender(items) as rec:
        config = client.get(SERVICE).json()
        connector = {"url": rec.url + "/users/{userId}/recs?n={topK}", "topK": 2}
        assert client.put(SERVICE, json={**config, "recommender": connector}).status_code == 200
        for params in ({"userId": ".."}, {"userId": "."}, {"userId": "../admin"}):
            r = client.post(f"{V1}/rank", json={"recommenderParams": params})
            assert "path" in _error(r, "InvalidRankRequest")
        r = client.post(f"{V1}/rank", json={"recommenderParams": {"userId": "u", "topK": 50}})
        assert "topK" in _error(r, "InvalidRankRequest")
        assert rec.requests == []
        r = client.post(f"{V1}/rank", json={"recommenderParams": {"userId": "u 1"}})
        assert r.status_code == 201, r.text
        assert [path for _, path, _ in rec.requests] == ["/users/u%201/recs?n=2"]


# -- forget: forgotten on disk too -----------------------------------------------


def _files_holding(data_dir: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def test_forget_leaves_no_copy_in_the_data_directory(
    client: TestClient, settings: Settings
) -> None:
    """After POST /logs/forget and DELETE /logs/events/{id} the values are in no file of
    the data directory: not in the database, not in its WAL."""
    for i in range(60):
        ctx = [{"user": {"email": f"person{i}@example.com"}}]
        body = {
            "contextFeatures": ctx,
            "actions": actions("a", "b"),
            "eventId": f"secret-event-{i}",
        }
        assert client.post(f"{V1}/rank", json=body).status_code == 201
        client.post(f"{V1}/events/secret-event-{i}/reward", json={"value": 1.0})
    data = settings.data_dir
    assert _files_holding(data, b"person7@example.com")  # the scan finds what is there
    r = client.post(
        f"{V1}/logs/forget", json={"feature": "user.email", "value": "person7@example.com"}
    )
    assert r.json() == {"deleted": 1}
    assert client.delete(f"{V1}/logs/events/secret-event-42").json() == {"deleted": 1}
    assert _files_holding(data, b"person7@example.com") == []
    assert _files_holding(data, b"secret-event-7") == []
    assert _files_holding(data, b"person42@example.com") == []
    assert _files_holding(data, b"secret-event-42") == []
    assert _files_holding(data, b"person8@example.com")  # the others are kept


# -- admin inputs: never a 500 ----------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"rewardWaitTime": "P99999999999999Y"},
        {"modelExportFrequency": "P99999999999999Y"},
        {"autoOptimizationFrequency": "P99999999999999Y"},
        {"logRetentionDays": 99999999999999999999},
        {"modelRetrainDays": 99999999999999999999},
        {"recommender": {"url": "http://x/{a}", "fallback": {"minEvents": 10**20}}},
    ],
)
def test_out_of_range_configuration_is_a_400_that_changes_nothing(
    client: TestClient, change: dict[str, Any]
) -> None:
    before = client.get(SERVICE).json()
    r = client.put(SERVICE, json={**before, **change})
    _error(r, "InvalidServiceConfiguration")
    assert client.get(SERVICE).json() == before
    ok = {"name": "p", "arguments": "--cb_explore_adf --epsilon 0.1"}
    assert client.put(POLICY, json=ok).status_code == 200  # nothing bad left in memory


# -- keys: /metrics and keyless loops ---------------------------------------------


def test_metrics_need_a_server_admin_key_when_asked(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "open"))) as c:
        assert c.get("/metrics").status_code == 200  # the default: open, as documented
    keyed = Settings(
        data_dir=tmp_path / "keyed",
        admin_keys=["admin"],
        client_keys=["client"],
        metrics_key_required=True,
    )
    with TestClient(create_app(keyed), raise_server_exceptions=False) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Ocp-Apim-Subscription-Key": "client"}).status_code == 403
        r = c.get("/metrics", headers={"Ocp-Apim-Subscription-Key": "admin"})
        assert r.status_code == 200 and "banditloop_loops" in r.text


def test_a_keyless_loop_needs_a_key_to_administer_once_a_loop_has_keys(client: TestClient) -> None:
    assert client.get(SERVICE).status_code == 200  # no key anywhere: open
    r = client.put("/loops/sports", json={"adminKeys": ["sports-admin"], "clientKeys": ["c"]})
    assert r.status_code == 201, r.text
    assert client.get(SERVICE).status_code == 401
    assert client.delete(MODEL).status_code == 401
    sports = {"Ocp-Apim-Subscription-Key": "sports-admin"}
    assert client.get(SERVICE, headers=sports).status_code == 401  # not the default's key
    assert client.get(f"/loops/sports{SERVICE}", headers=sports).status_code == 200
    # ranking on the keyless loop stays open
    assert client.post(f"{V1}/rank", json={"actions": actions("a", "b")}).status_code == 201
