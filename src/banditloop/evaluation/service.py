"""Jobs of a loop: create, read, delete evaluations and feature importances; apply a policy."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ..config import parse_duration
from ..errors import BadRequest, NotFound
from ..loop import Loop
from ..store.base import JobRecord
from .jobs import EVALUATION, IMPORTANCE, JobRunner
from .replay import BASELINE, ONLINE, RANDOM

NOT_FOUND = {EVALUATION: "EvaluationNotFound", IMPORTANCE: "FeatureImportanceNotFound"}
EXISTS = {EVALUATION: "EvaluationAlreadyExists", IMPORTANCE: "FeatureImportanceAlreadyExists"}
LABEL = {EVALUATION: "Evaluation", IMPORTANCE: "Feature importance"}
MAX_CUSTOM_POLICIES = 10


def create(
    runner: JobRunner,
    loop: Loop,
    kind: str,
    job_id: str,
    request: dict[str, Any],
    then: Callable[[JobRecord], None] | None = None,
) -> JobRecord:
    """Store a Running job and start it; a job id may be used once. ``then`` runs with
    the finished job once it is stored."""
    if not job_id or len(job_id) > 256:
        raise BadRequest("The id must be 1 to 256 characters.", "InvalidEvaluationContract")
    if request["end"] <= request["start"]:
        raise BadRequest("endTime must be after startTime.", "InvalidEvaluationContract")
    policies = request.get("policies") or []
    if len(policies) > MAX_CUSTOM_POLICIES:
        raise BadRequest(
            f"At most {MAX_CUSTOM_POLICIES} custom policies.", "InvalidEvaluationContract"
        )
    names = [p["name"] for p in policies]
    if len(set(names)) != len(names) or set(names) & {ONLINE, BASELINE, RANDOM}:
        raise BadRequest("Custom policy names should be unique.", "DuplicateCustomPolicyNames")
    from ..policy import check_arguments

    for p in policies:
        check_arguments(p["arguments"])
        if "--ccb_explore_adf" in p["arguments"]:
            raise BadRequest(
                "Multi-slot policies cannot be evaluated yet.", "InvalidEvaluationContract"
            )
    job = JobRecord(job_id, loop.clock(), "Running", request)
    if not loop.store.put_job(loop.name, kind, job).result():
        raise BadRequest(f"{LABEL[kind]} with id {job_id} already exists.", EXISTS[kind])

    def done(finished: JobRecord) -> None:
        if get_or_none(loop, kind, job_id) is not None:  # not deleted meanwhile
            loop.store.put_job(loop.name, kind, finished).result()
            if then is not None:
                then(finished)

    runner.submit(kind, loop.store.location, loop.name, job, loop.record.policy, done)
    return job


def listed(loop: Loop, kind: str) -> list[JobRecord]:
    """The loop's jobs of a kind, oldest first."""
    return loop.store.get_jobs(loop.name, kind)


def get_or_none(loop: Loop, kind: str, job_id: str) -> JobRecord | None:
    found = loop.store.get_jobs(loop.name, kind, job_id)
    return found[0] if found else None


def get(loop: Loop, kind: str, job_id: str) -> JobRecord:
    job = get_or_none(loop, kind, job_id)
    if job is None:
        raise NotFound(f"{LABEL[kind]} {job_id} not found.", NOT_FOUND[kind])
    return job


def delete(loop: Loop, kind: str, job_id: str) -> None:
    if not loop.store.delete_job(loop.name, kind, job_id).result():
        raise NotFound(f"{LABEL[kind]} {job_id} not found.", NOT_FOUND[kind])


def exploration_of(arguments: str) -> float | None:
    """The ``--epsilon`` of policy arguments, if they set one."""
    tokens = arguments.replace("=", " ").split()
    for flag in ("--epsilon", "-e"):
        if flag in tokens and tokens.index(flag) + 1 < len(tokens):
            try:
                return float(tokens[tokens.index(flag) + 1])
            except ValueError:
                return None
    return None


def apply(loop: Loop, evaluation_id: str, policy_name: str) -> None:
    """Make an evaluated policy live, with the model it learned during the replay."""
    job = get(loop, EVALUATION, evaluation_id)
    if job.status != "Succeeded" or not job.result:
        raise BadRequest("Learning Settings not found in evaluation.", "LearningSettingsNotFound")
    if policy_name == ONLINE:
        return
    policy = next((p for p in job.result["policies"] if p["name"] == policy_name), None)
    if policy is None or policy["policySource"] in ("Baseline", "Random"):
        raise BadRequest(
            f"{policy_name} is not a policy of evaluation {evaluation_id} that can be applied.",
            "LearningSettingsNotFound",
        )
    diagnostics = (policy.get("summary") or {}).get("diagnostics") or {}
    if diagnostics.get("estimable") is False:  # its estimate says nothing: not applied
        raise BadRequest(
            f"{policy_name} cannot be applied: its estimate is {diagnostics['reason']}.",
            "PolicyNotEstimable",
        )
    epsilon = exploration_of(policy["arguments"])
    if epsilon is not None and epsilon != loop.config.exploration:
        # explorationPercentage rewrites --epsilon: carry the evaluated rate over
        wire = loop.wire.model_copy(update={"explorationPercentage": epsilon})
        loop.update_configuration(wire)
    loop.update_policy(policy_name, policy["arguments"])
    model = job.result.get("models", {}).get(policy_name)
    if model:
        loop.import_model(base64.b64decode(model))


AUTO_PREFIX = "auto-"


def auto_optimize(runner: JobRunner, loop: Loop, now: float | None = None) -> JobRecord | None:
    """Start a policy search if auto-optimization is on and one is due; a win is applied.

    Due every ``autoOptimizationFrequency`` from ``autoOptimizationStartDate``; it looks
    at the last ``modelRetrainDays`` days of logs (or, if 0, one period)."""
    wire = loop.wire
    if not wire.isAutoOptimizationEnabled or loop.policy.multislot:
        return None
    now = loop.clock() if now is None else now
    every = parse_duration(wire.autoOptimizationFrequency or "P7D", "autoOptimizationFrequency")
    start = wire.autoOptimizationStartDate.timestamp() if wire.autoOptimizationStartDate else 0.0
    runs = [j for j in loop.store.get_jobs(loop.name, EVALUATION) if j.id.startswith(AUTO_PREFIX)]
    last = max((j.created for j in runs), default=None)
    if now < start or (last is not None and now - last < every):
        return None
    days = wire.modelRetrainDays
    request = {
        "name": "Auto optimization",
        "start": now - (days * 86400 if days > 0 else every),
        "end": now,
        "policies": [],
        "optimize": True,
        "auto": True,
    }

    def apply_win(job: JobRecord) -> None:
        best = (job.result or {}).get("optimalPolicy")
        if job.status == "Succeeded" and best and best != ONLINE:
            apply(loop, job.id, best)

    return create(runner, loop, EVALUATION, f"{AUTO_PREFIX}{int(now)}", request, apply_win)
