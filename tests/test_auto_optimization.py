"""Auto-optimization: a due policy search runs by itself and applies only a real win."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from banditloop.evaluation import service
from banditloop.simulate import NewsWorld, rank_body
from helpers import V1, poll

WEAK = "--cb_explore_adf --epsilon 0.8 --cb_type mtr"  # no interactions: cannot personalize


def _traffic(client: TestClient, n: int) -> None:
    world = NewsWorld(seed=3)
    for _ in range(n):
        it = world.next()
        r = client.post(V1 + "/rank", json=rank_body(it))
        answer = r.json()
        reward = world.reward(it, answer["rewardActionId"])
        client.post(f"{V1}/events/{answer['eventId']}/reward", json={"value": reward})


def test_due_search_runs_and_applies_a_significant_win(client: TestClient) -> None:
    config = client.get(V1 + "/configurations/service").json()
    config["explorationPercentage"] = 0.8  # explorationPercentage sets --epsilon
    assert client.put(V1 + "/configurations/service", json=config).status_code == 200
    policy = {"name": "weak", "arguments": WEAK}
    assert client.put(V1 + "/configurations/policy", json=policy).status_code == 200
    _traffic(client, 1500)
    registry = client.app.state.registry  # type: ignore[attr-defined]
    runner = client.app.state.service.runner  # type: ignore[attr-defined]
    loop = registry.loops["default"]
    poll(lambda: loop.store.closed_events("default", time.time() + 5, 1) == [], timeout=20)

    config = client.get(V1 + "/configurations/service").json()
    assert service.auto_optimize(runner, loop) is None  # not enabled: nothing
    config.update(isAutoOptimizationEnabled=True, autoOptimizationFrequency="P1D")
    assert client.put(V1 + "/configurations/service", json=config).status_code == 200

    job = service.auto_optimize(runner, loop)
    assert job is not None and job.id.startswith("auto-")
    assert service.auto_optimize(runner, loop) is None  # not due again for a day

    def finished() -> bool:
        return service.get(loop, "evaluation", job.id).status != "Running"

    poll(finished, timeout=120)
    done = service.get(loop, "evaluation", job.id)
    assert done.status == "Succeeded", done.result
    best = done.result["optimalPolicy"]
    assert best != "online", done.result  # the weak online policy loses to a -q one
    poll(lambda: client.get(V1 + "/configurations/policy").json()["name"] == best, timeout=30)
    assert "-q ::" in client.get(V1 + "/configurations/policy").json()["arguments"]
