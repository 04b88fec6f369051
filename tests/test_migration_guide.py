"""docs/migrating-from-azure.md, run as written: a synthetic Azure log mirror (nested
date folders, .json and .json.gz), a model trained offline by VW under Azure's policy,
both imported with the guide's commands, then the guide's checks: the imported model
ranks exactly as VW does with it, and the imported logs evaluate."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import vowpalwabbit
from click.testing import CliRunner
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.cli import main
from banditloop.config import Settings
from banditloop.logimport import lines_of, log_files
from banditloop.policy import AZURE_DEFAULT_POLICY
from banditloop.ranking import plan
from helpers import V1, pmf_of, poll, scalar
from test_logimport import azure_tree

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-azure.md"
ACTIONS = [
    {"id": a, "features": [{"kind": a, "size": len(a)}]} for a in ("espresso", "latte", "tea")
]


def guide_commands() -> list[list[str]]:
    """The ``banditloop`` commands of the guide's shell blocks, in order."""
    text = GUIDE.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("banditloop ") and "--url" not in line:
                commands.append(shlex.split(line)[1:])
    return commands


def train_like_azure(mirror: Path, model: Path) -> None:
    """What Azure's trainer did: VW with the loop's policy over the DSJSON log."""
    ws = vowpalwabbit.Workspace(f"{AZURE_DEFAULT_POLICY} --dsjson --quiet -f {model}")
    for path in log_files([mirror]):
        with path.open("rb") as fh:
            for text in lines_of(fh):
                obj = json.loads(text)
                if "_outcomes" in obj or obj.get("_skipLearn"):
                    continue  # Azure learns neither
                ex = ws.parse(text.decode())
                ws.learn(ex)
                ws.finish_example(ex)
    ws.finish()


def test_the_guide_moves_a_loop_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    azure_tree(tmp_path / "azure-logs")
    train_like_azure(tmp_path / "azure-logs", tmp_path / "model.vw")
    commands = guide_commands()
    assert [c[:2] for c in commands] == [
        ["config", "set"],
        ["model", "import"],
        ["logs", "import"],
        ["evaluate", "--data-dir"],
    ]
    for args in commands[:3]:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, (args, res.output)
    assert "imported 120 events from 3 of 3 files" in res.output
    assert "1 multi-slot (CCB) lines were not imported" in res.output

    # verify: the server ranks with the imported model exactly as VW does
    data = tmp_path / "data"
    with TestClient(create_app(Settings(data_dir=data))) as client:
        policy = client.get(f"{V1}/configurations/policy").json()["arguments"]
        assert policy == AZURE_DEFAULT_POLICY
        ws = vowpalwabbit.Workspace(f"{policy} --json --quiet -i {tmp_path / 'model.vw'}")
        for hour in range(24):
            context = [{"hour": hour, "weather": "sunny"}]
            r = client.post(f"{V1}/rank", json={"contextFeatures": context, "actions": ACTIONS})
            assert r.status_code == 201, r.text
            p = plan(context, [(a["id"], a["features"]) for a in ACTIONS], None)
            ex = ws.parse(p.example)
            local = ws.predict(ex)
            ws.finish_example(ex)
            assert dict(zip(p.vw_ids, local, strict=True)) == pytest.approx(
                pmf_of(r.json()), abs=1e-6
            )
        ws.finish()
        # the imported events are joined (not learned: the model holds them already)
        imported_open = "SELECT count(*) FROM decisions WHERE outcome IS NULL AND mode='Imported'"
        poll(lambda: scalar(data, imported_open) == 0)
    res = CliRunner().invoke(main, commands[3])
    assert res.exit_code == 0, res.output
    # online is what was logged: the mean reward of the 115 learnable events (5 were
    # deferred and never activated), 90 rewarded 1.0 and 25 rewarded 0.5
    online = next(row for row in res.output.splitlines() if row.startswith("| online"))
    cells = [c.strip() for c in online.split("|")]
    assert cells[3] == f"{102.5 / 115:.3f}" and cells[7] == "115", online  # events
    assert "| baseline1 |" in res.output
