"""Evaluations, feature importances, applying a policy, and log export.

Both of Azure's shapes are served: v1.0 and the v1.1 previews (POST
/evaluations, 201 with Location, bare-array list) and 2022-09-01-preview (PUT
/evaluations/{id}, 200 with no body, ``{"value", "nextLink"}`` lists).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from ..evaluation import service as jobs
from ..evaluation.jobs import EVALUATION, IMPORTANCE, series
from ..loop import Loop, iso
from .deps import AdminLoop, service
from .schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES, tags=["evaluation"])
JobId = Annotated[str, Path(min_length=1, max_length=256)]


class PolicyContract(BaseModel):
    name: str = Field(max_length=256)
    arguments: str = Field(max_length=1024)


class EvaluationContract(BaseModel):
    name: str = Field(max_length=256)
    startTime: AwareDatetime | None = None
    endTime: AwareDatetime | None = None
    policies: list[PolicyContract] = Field(default_factory=list)
    enablePolicyOptimization: bool | None = None
    enableOfflineExperimentation: bool | None = None


class FeatureImportanceContract(BaseModel):
    name: str = Field(max_length=256)
    startTime: AwareDatetime | None = None
    endTime: AwareDatetime | None = None


class PolicyReferenceContract(BaseModel):
    evaluationId: str = Field(max_length=256)
    policyName: str = Field(max_length=256)


def _v1(request: Request) -> bool:
    return "/personalizer/v1." in request.url.path


def _times(start: Any, end: Any) -> tuple[float, float]:
    """Seconds; a missing start is the beginning of the log, a missing end is now."""
    return (start.timestamp() if start else 0.0, end.timestamp() if end else time.time())


def _create(request: Request, loop: Loop, kind: str, job_id: str, body: Any) -> Any:
    start, end = _times(body.startTime, body.endTime)
    spec = {"name": body.name, "start": start, "end": end}
    if kind == EVALUATION:
        spec["policies"] = [p.model_dump() for p in body.policies]
        spec["optimize"] = bool(body.enablePolicyOptimization or body.enableOfflineExperimentation)
    return jobs.create(service(request).runner, loop, kind, job_id, spec)


_V1_STATUS = {"Running": "pending", "Succeeded": "completed", "Failed": "failed"}


def evaluation_body(
    job: Any, v1: bool, interval: int = 5, window: str = "Expanding"
) -> dict[str, Any]:
    req, res = job.request, job.result or {}
    base = {
        "id": job.id,
        "name": req["name"],
        "startTime": iso(req["start"]),
        "endTime": iso(req["end"]),
        "creationTime": iso(job.created),
        "evaluationType": "Manual",
        "status": _V1_STATUS[job.status] if v1 else job.status,
        "optimalPolicy": res.get("optimalPolicy"),
        # extension: the policies the logs cannot evaluate (never named optimal), and why
        "notEstimablePolicies": res.get("notEstimable", {}),
    }
    if "error" in res:
        base["description"] = res["error"]
    policies = res.get("policies", [])
    if v1:
        return {
            **base,
            "jobId": job.id,
            "featureImportance": [],
            "policyResults": [
                {
                    "name": p["name"],
                    "arguments": p["arguments"],
                    "policySource": p["policySource"],
                    "summary": [_v1_summary(p["summary"], s) for s in series(p, 60, "Rolling")],
                    "totalSummary": _v1_summary(p["summary"], None),
                }
                for p in policies
            ],
        }
    return {
        **base,
        "content": {
            "startTime": iso(req["start"]),
            "endTime": iso(req["end"]),
            "intervalInMinutes": interval,
            "value": [
                {
                    "name": p["name"],
                    "arguments": p["arguments"],
                    "policySource": p["policySource"],
                    "slotId": "",
                    "summary": p["summary"],
                    "timeseries": {"data": series(p, interval, window)},
                }
                for p in policies
            ],
        },
    }


def _v1_summary(total: dict[str, Any], point: dict[str, Any] | None) -> dict[str, Any]:
    src = point or total
    low, high = src["confidenceInterval"]
    value = src["expectedReward"]
    half = (high - low) / 2 if low is not None and high is not None else None
    return {
        "timeStamp": src.get("timeStamp"),
        "averageReward": value,
        "confidenceInterval": half,
        "aggregateTimeWindow": "PT1H" if point else None,
        "diagnostics": src.get("diagnostics") or total.get("diagnostics"),
    }


def importance_body(job: Any) -> dict[str, Any]:
    req, res = job.request, job.result or {}
    return {
        "id": job.id,
        "name": req["name"],
        "startTime": iso(req["start"]),
        "endTime": iso(req["end"]),
        "creationTime": iso(job.created),
        "status": job.status,
        "featureScores": res.get("featureScores", []),
        "diagnostics": res.get("diagnostics"),
        **({"description": res["error"]} if "error" in res else {}),
    }


# -- evaluations -----------------------------------------------------------------


@router.post("/evaluations", status_code=201)
async def create_evaluation_v1(
    request: Request, body: EvaluationContract, loop: AdminLoop
) -> Response:
    """v1.0: start an evaluation; 201 with its Location."""
    job_id = uuid.uuid4().hex
    job = await run_in_threadpool(_create, request, loop, EVALUATION, job_id, body)
    return Response(
        _json(evaluation_body(job, True)),
        status_code=201,
        media_type="application/json",
        headers={"Location": f"{request.url.path}/{job_id}"},
    )


_STARTED = {"response_class": Response, "responses": {200: {"description": "Started; no body."}}}


@router.put("/evaluations/{evaluationId}", **_STARTED)  # type: ignore[arg-type]
async def create_evaluation(
    request: Request, evaluationId: JobId, body: EvaluationContract, loop: AdminLoop
) -> Response:
    """2022-09: start an evaluation under a chosen id (200, no body)."""
    await run_in_threadpool(_create, request, loop, EVALUATION, evaluationId, body)
    return Response(status_code=200)


@router.get("/evaluations/{evaluationId}")
async def get_evaluation(
    request: Request,
    evaluationId: JobId,
    loop: AdminLoop,
    startTime: AwareDatetime | None = None,
    endTime: AwareDatetime | None = None,
    intervalInMinutes: Annotated[int, Query(ge=5, le=1440)] = 5,
    window: Literal["Expanding", "Rolling"] = "Expanding",
) -> Response:
    """An evaluation with its estimates per policy and, per interval, a time series."""
    job = await run_in_threadpool(jobs.get, loop, EVALUATION, evaluationId)
    return Response(
        _json(evaluation_body(job, _v1(request), intervalInMinutes, window)),
        media_type="application/json",
    )


@router.get("/evaluations")
async def list_evaluations(request: Request, loop: AdminLoop) -> Response:
    """Every evaluation of the loop."""
    found = await run_in_threadpool(jobs.listed, loop, EVALUATION)
    if _v1(request):
        return Response(
            _json([evaluation_body(j, True) for j in found]), media_type="application/json"
        )
    details = [
        {k: v for k, v in evaluation_body(j, False).items() if k != "content"} for j in found
    ]
    return Response(_json({"value": details, "nextLink": None}), media_type="application/json")


@router.delete("/evaluations/{evaluationId}", status_code=204)
async def delete_evaluation(evaluationId: JobId, loop: AdminLoop) -> Response:
    await run_in_threadpool(jobs.delete, loop, EVALUATION, evaluationId)
    return Response(status_code=204)


@router.post("/configurations/applyFromEvaluation", status_code=204, tags=["admin"])
async def apply_from_evaluation(body: PolicyReferenceContract, loop: AdminLoop) -> Response:
    """Make a policy of a finished evaluation live, with the model it learned in the replay."""
    await run_in_threadpool(jobs.apply, loop, body.evaluationId, body.policyName)
    return Response(status_code=204)


# -- feature importances ------------------------------------------------------------


@router.put("/featureImportances/{featureImportanceId}", **_STARTED)  # type: ignore[arg-type]
async def create_feature_importance(
    request: Request,
    featureImportanceId: JobId,
    body: FeatureImportanceContract,
    loop: AdminLoop,
) -> Response:
    """Start measuring feature importance on the logs (200, no body)."""
    await run_in_threadpool(_create, request, loop, IMPORTANCE, featureImportanceId, body)
    return Response(status_code=200)


@router.get("/featureImportances/{featureImportanceId}")
async def get_feature_importance(featureImportanceId: JobId, loop: AdminLoop) -> Response:
    job = await run_in_threadpool(jobs.get, loop, IMPORTANCE, featureImportanceId)
    return Response(_json(importance_body(job)), media_type="application/json")


@router.get("/featureImportances")
async def list_feature_importances(loop: AdminLoop) -> Response:
    found = await run_in_threadpool(jobs.listed, loop, IMPORTANCE)
    body = {"value": [importance_body(j) for j in found], "nextLink": None}
    return Response(_json(body), media_type="application/json")


@router.delete("/featureImportances/{featureImportanceId}", status_code=204)
async def delete_feature_importance(featureImportanceId: JobId, loop: AdminLoop) -> Response:
    await run_in_threadpool(jobs.delete, loop, IMPORTANCE, featureImportanceId)
    return Response(status_code=204)


# -- export -------------------------------------------------------------------------


@router.get(
    "/logs/export",
    tags=["admin", "extension"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "DSJSON lines."}},
)
async def export_logs(
    loop: AdminLoop,
    startTime: AwareDatetime | None = None,
    endTime: AwareDatetime | None = None,
) -> StreamingResponse:
    """Extension: the joined decisions of a time range as DSJSON, one per line (streamed)."""
    start, end = _times(startTime, endTime)
    return StreamingResponse(loop.export(start, end), media_type="application/x-ndjson")


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)
