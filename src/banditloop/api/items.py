"""Extension endpoints of one loop: its item catalogue, and its re-ranking counters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import NotFound
from ..items import MAX_ITEMS_PER_CALL, check_item
from .deps import AdminLoop
from .schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES, tags=["admin", "extension"])
ItemId = Annotated[str, Path(max_length=256, description="The item's id (an action id).")]


class ItemIn(BaseModel):
    id: str = Field(min_length=1, max_length=256, description="The item's id (an action id).")
    features: list[Any] | None = Field(None, description="Feature objects, as in Rank.")
    available: bool = Field(True, description="False: never ranked (left out of candidates).")


class ItemOut(BaseModel):
    id: str
    features: list[Any]
    available: bool


class Upserted(BaseModel):
    upserted: int


@router.put("/items", response_model=Upserted)
async def put_items(
    items: Annotated[list[ItemIn], Body(max_length=MAX_ITEMS_PER_CALL)], loop: AdminLoop
) -> dict[str, int]:
    """Extension: insert or replace catalogue items, `[{"id", "features", "available"?}]`."""
    checked = [check_item(it.id, it.features, it.available) for it in items]
    n = await run_in_threadpool(lambda: loop.items.put(checked).result())
    return {"upserted": n}


@router.get("/items/{itemId}", response_model=ItemOut)
async def get_item(itemId: ItemId, loop: AdminLoop) -> dict[str, Any]:
    """Extension: one catalogue item."""
    item = loop.items.get(itemId)
    if item is None:
        raise NotFound(f"Item {itemId} does not exist.")
    return item.to_json()


@router.delete("/items/{itemId}", status_code=204)
async def delete_item(itemId: ItemId, loop: AdminLoop) -> Response:
    """Extension: remove an item from the catalogue."""
    if not await run_in_threadpool(lambda: loop.items.delete(itemId).result()):
        raise NotFound(f"Item {itemId} does not exist.")
    return Response(status_code=204)


@router.get("/counters", response_model=dict[str, int])
async def counters(loop: AdminLoop) -> dict[str, int]:
    """Extension: re-ranking counters of this process since it started (recommender
    calls and failures by reason, fallbacks, model failures)."""
    return dict(loop.counters)
