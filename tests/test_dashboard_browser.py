"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

A server is started on a data directory holding an hour of logged traffic, gets
live traffic and an evaluation, and the page must draw its charts with data.
The screenshot goes to the test's directory, and to docs/img/dashboard.png when
that file is missing or ``BANDITLOOP_SCREENSHOTS=1`` (``make screenshots``).
"""

from __future__ import annotations

import os
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from banditloop.ranking import plan
from banditloop.store.base import Decision, SlotChoice
from banditloop.store.sqlite import SqliteStore
from conftest import Server
from helpers import TIMEOUT

CHROMIUM = os.environ.get("BANDITLOOP_CHROMIUM", "/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img" / "dashboard.png"
#: As the machine notes say: no sandbox as root, and no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOPICS = ["sports", "news", "music"]
PREFIX = "/personalizer"
QUERY = "?api-version=2022-09-01-preview"


def chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: `make chromium` installs Debian's package "
            "(as root, with apt-get), or set BANDITLOOP_CHROMIUM."
        )
    return path


def request(user: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    context = [{"user": {"likes": user}}]
    actions = [{"id": t, "features": [{"topic": t}]} for t in TOPICS]
    return context, actions


def reward_for(user: str, action: str, rng: random.Random) -> float:
    return float(rng.random() < (0.8 if user == action else 0.2))


def log_history(data_dir: Path, minutes: int = 60, per_minute: int = 40) -> None:
    """An hour of decisions by a policy that gets better, with rewards, some late or orphan."""
    rng = random.Random(7)
    store = SqliteStore(data_dir, "NORMAL")
    now = time.time()
    last = None
    try:
        for i in range(minutes * per_minute):
            ts = now - minutes * 60 + i * 60 / per_minute
            user = rng.choice(TOPICS)
            context, actions = request(user)
            p = plan(context, [(a["id"], a["features"]) for a in actions], None)  # type: ignore[misc]
            skill = min(1.0, i / (minutes * per_minute * 0.6))  # how often the model knows
            greedy = TOPICS.index(user) if rng.random() < skill else rng.randrange(3)
            pmf = [0.2 / 3 + (0.8 if k == greedy else 0.0) for k in range(3)]
            chosen = rng.choices(range(3), pmf)[0]
            event_id = uuid.uuid4().hex
            store.append_decision(
                Decision(
                    loop="default",
                    event_id=event_id,
                    ts=ts,
                    close_at=ts + 1.0,
                    deferred=False,
                    request_hash="history",
                    example=p.example,
                    action_ids=p.vw_ids,
                    slots=[SlotChoice(None, [0, 1, 2], pmf, chosen, chosen, 0)],
                    response=b"{}",
                    model_version="0",
                )
            )
            value = reward_for(user, TOPICS[chosen], rng)
            delay = 3.0 if rng.random() < 0.03 else rng.random() * 0.5  # 3% arrive late
            if value:
                last = store.append_rewards("default", event_id, [(None, value)], ts + delay, False)
            if rng.random() < 0.01:
                store.append_rewards("default", uuid.uuid4().hex, [(None, 1.0)], ts, False)
        assert last is not None
        last.result()
    finally:
        store.close()


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "data"
    log_history(data)
    srv = Server(data).start()
    yield srv
    srv.stop()


def live_traffic(base: str, n: int) -> int:
    rng = random.Random(11)
    with httpx.Client(base_url=base, timeout=10) as c:
        for _ in range(n):
            user = rng.choice(TOPICS)
            context, actions = request(user)
            r = c.post(f"{PREFIX}/v1.0/rank", json={"contextFeatures": context, "actions": actions})
            assert r.status_code == 201
            answer = r.json()
            if reward_for(user, answer["rewardActionId"], rng):
                c.post(f"{PREFIX}/v1.0/events/{answer['eventId']}/reward", json={"value": 1.0})
    return n


def run_jobs(base: str, timeout: float = 90) -> None:
    """An evaluation and a feature importance over the log, waited for (within reason)."""
    span = {"startTime": "2020-01-01T00:00:00Z", "endTime": "2100-01-01T00:00:00Z"}
    with httpx.Client(base_url=base, timeout=30) as c:
        for kind, name in (("evaluations", "last hour"), ("featureImportances", "last hour")):
            r = c.put(f"{PREFIX}/{kind}/{kind[:4]}1{QUERY}", json={"name": name, **span})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + timeout
        for kind in ("evaluations", "featureImportances"):
            while time.monotonic() < deadline:
                if c.get(f"{PREFIX}/{kind}/{kind[:4]}1{QUERY}").json()["status"] != "Running":
                    break
                time.sleep(0.5)


def test_dashboard_renders_charts_with_data_in_chromium(
    busy_server: Server, tmp_path: Path
) -> None:
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    base = busy_server.url
    live_traffic(base, 150)
    run_jobs(base)
    with httpx.Client(
        base_url=base, timeout=TIMEOUT
    ) as c:  # the trainer has caught up with the history
        deadline = time.monotonic() + 30
        while c.get("/dashboard/data").json()["trainer"]["eventsLearned"] < 2400:
            assert time.monotonic() < deadline, "the trainer did not learn the history"
            time.sleep(0.5)

    shot = tmp_path / "dashboard.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/dashboard?loop=default", wait_until="load")
            page.wait_for_function(
                "Number(document.body.dataset.refreshes || 0) >= 1", timeout=20000
            )
            points = int(page.evaluate("document.body.dataset.points"))
            canvases = page.locator("canvas").count()
            series = page.evaluate(
                """() => Object.fromEntries(
                     Object.entries(window.banditloopDashboard.charts).map(([id, u]) =>
                       [id, u.data.slice(1).map(s => s.filter(v => v !== null).length)]))"""
            )
            online = page.evaluate("window.banditloopDashboard.data.totals.rewardRate.online.value")
            evaluations = page.locator("#evaluations table").count()
            page.wait_for_timeout(300)  # let the last frame paint
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert not errors, errors
    assert points > 60
    assert canvases >= 6
    for chart in (
        "chart-traffic",
        "chart-reward",
        "chart-shares",
        "chart-entropy",
        "chart-trainer",
    ):
        assert max(series[chart]) > 0, (chart, series[chart])
    assert online is not None and online > 0.3
    assert evaluations >= 1
    assert shot.stat().st_size > 20_000
    if os.environ.get("BANDITLOOP_SCREENSHOTS") == "1" or not DOCS_IMG.exists():
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG)
