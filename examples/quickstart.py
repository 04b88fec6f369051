"""Rank and reward with Microsoft's own SDK against a local banditloop.

Start the server with `make run`, then: .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import random

from azure.ai.personalizer import PersonalizerClient
from azure.core.credentials import AzureKeyCredential

ARTICLES = ["politics", "sports", "music", "food"]
LIKES = {
    ("Tom", "morning"): "politics",
    ("Tom", "evening"): "music",
    ("Anna", "morning"): "sports",
    ("Anna", "evening"): "food",
}


def main() -> None:
    client = PersonalizerClient("http://127.0.0.1:8080", AzureKeyCredential("unused"))
    clicks = 0
    for i in range(1, 1001):
        user, time_of_day = random.choice(["Tom", "Anna"]), random.choice(["morning", "evening"])
        answer = client.rank(
            {
                "contextFeatures": [{"user": user, "timeOfDay": time_of_day}],
                "actions": [{"id": a, "features": [{"topic": a}]} for a in ARTICLES],
            }
        )
        reward = 1.0 if LIKES[(user, time_of_day)] == answer["rewardActionId"] else 0.0
        client.reward(answer["eventId"], {"value": reward})
        clicks += int(reward)
        if i % 100 == 0:
            print(f"{i} ranks, click-through rate so far {clicks / i:.2f}")


if __name__ == "__main__":
    main()
