"""kill -9 under load loses nothing acknowledged, and the trainer resumes exactly."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from conftest import Server
from helpers import V1, actions, poll, query, scalar

# A checkpoint every second, so that the kill lands between saved and unsaved marks.
LOOP = 'BANDITLOOP_LOOP={"rewardWaitTime": "PT1S", "modelExportFrequency": "PT1S"}'
# No checkpoint while running: only a graceful stop saves the model.
NO_CHECKPOINT = 'BANDITLOOP_LOOP={"rewardWaitTime": "PT1S", "modelExportFrequency": "PT1H"}'


class Traffic(threading.Thread):
    """Ranks and rewards until the server stops answering; records what was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ranked: dict[str, bool] = {}  # event id -> deferred, for every 201
        self.rewarded: Counter[tuple[str, float]] = Counter()  # (event id, value) per 204
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        users = ["ann", "bob", "cy"]
        with httpx.Client(base_url=self.url, timeout=5) as http:
            i = 0
            while not self.stop.is_set():
                event_id = f"ev-{i:05d}"
                deferred = i % 7 == 3  # never activated: handled, never learned
                try:
                    r = http.post(
                        f"{V1}/rank",
                        json={
                            "contextFeatures": [{"user": users[i % 3]}],
                            "actions": actions("a", "b", "c", "d"),
                            "eventId": event_id,
                            "deferActivation": deferred,
                        },
                    )
                    if r.status_code != 201:
                        raise ValueError(r.status_code)
                    self.ranked[event_id] = deferred
                    if i % 2 == 0:  # half rewarded (closing at once), half left to the window
                        value = 1.0 if r.json()["rewardActionId"] == "a" else 0.25
                        r = http.post(f"{V1}/events/{event_id}/reward", json={"value": value})
                        if r.status_code == 204:
                            self.rewarded[(event_id, value)] += 1
                except (httpx.HTTPError, ValueError):
                    self.errors += 1
                    if self.errors > 20:
                        return
                    time.sleep(0.01)
                i += 1


def _unlearned(data_dir: Path) -> int:
    return scalar(data_dir, "SELECT count(*) FROM decisions WHERE learned_in IS NULL")


def test_kill_9_loses_nothing_and_learns_each_event_once(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", extra=(LOOP,)).start()
    try:
        traffic = Traffic(server.url)
        traffic.start()
        poll(lambda: len(traffic.ranked) >= 300, timeout=20)
        # at least one checkpoint saved, with events learned after it
        poll(lambda: scalar(server.data_dir, "SELECT count(*) FROM models") >= 1, timeout=10)
        assert traffic.errors == 0, "the server refused requests before the kill"
        server.kill()
        traffic.stop.set()
        traffic.join(10)
        assert not traffic.is_alive()

        data_dir = server.data_dir
        unsaved = scalar(
            data_dir,
            "SELECT count(*) FROM decisions WHERE learned_in > "
            "(SELECT coalesce(max(number), 0) FROM models)",
        )
        print(
            f"acknowledged ranks {len(traffic.ranked)}, rewards "
            f"{sum(traffic.rewarded.values())}, marks above the last checkpoint {unsaved}"
        )

        # -- nothing acknowledged is lost (read before any restart)
        stored = dict(query(data_dir, "SELECT event_id, deferred FROM decisions"))
        missing = [e for e in traffic.ranked if e not in stored]
        assert not missing, f"{len(missing)} acknowledged ranks lost, e.g. {missing[:5]}"
        assert all(bool(stored[e]) == d for e, d in traffic.ranked.items())
        stored_rewards = Counter(query(data_dir, "SELECT event_id, value FROM rewards"))
        lost = traffic.rewarded - stored_rewards
        assert not lost, f"acknowledged rewards lost: {list(lost)[:5]}"

        # -- restart: the trainer resumes and handles every closed decision
        server.start()
        poll(lambda: _unlearned(data_dir) == 0, timeout=20)
        server.stop()  # graceful: the last checkpoint is saved

        number, events_learned = query(
            data_dir, "SELECT number, events_learned FROM models ORDER BY number DESC LIMIT 1"
        )[0]
        assert scalar(data_dir, "SELECT max(learned_in) FROM decisions") <= number
        handled, skipped = query(
            data_dir,
            "SELECT count(*), coalesce(sum(deferred), 0) FROM decisions "
            "WHERE learned_in IS NOT NULL",
        )[0]
        assert handled == len(stored)
        assert skipped > 0
        # every deferred decision was never activated, so it is skipped; the rest learned once
        assert events_learned == handled - skipped
    finally:
        server.stop()


def test_kill_before_any_checkpoint_relearns_everything(tmp_path: Path) -> None:
    """Marks of a checkpoint never saved are cleared and those events learned again."""
    server = Server(tmp_path / "data", extra=(NO_CHECKPOINT,)).start()
    data_dir = server.data_dir
    try:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            for i in range(40):
                r = http.post(
                    f"{V1}/rank",
                    json={"actions": actions("a", "b"), "eventId": f"k-{i}"},
                )
                assert r.status_code == 201
                r = http.post(f"{V1}/events/k-{i}/reward", json={"value": 1.0})
                assert r.status_code == 204
        poll(lambda: _unlearned(data_dir) == 0, timeout=10)
        assert scalar(data_dir, "SELECT count(*) FROM models") == 0
        server.kill()
        assert scalar(data_dir, "SELECT count(*) FROM decisions WHERE learned_in = 1") == 40

        server.start()
        poll(lambda: _unlearned(data_dir) == 0, timeout=10)
        server.stop()
        rows = query(data_dir, "SELECT number, events_learned FROM models ORDER BY number")
        assert rows == [(1, 40)]
    finally:
        server.stop()
