"""``create_app(settings)``: the FastAPI application; its lifespan owns store and loops."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from . import __version__
from .api import errors
from .api.events import router as events_router
from .config import Settings
from .loop import Loop
from .store import SqliteStore

log = logging.getLogger(__name__)

#: The base paths Azure Personalizer's clients use: v1.0 (GA), the v1.1 previews,
#: and ``/personalizer?api-version=2022-09-01-preview`` (azure-ai-personalizer).
API_PREFIXES = [
    "/personalizer/v1.0",
    "/personalizer/v1.1-preview.1",
    "/personalizer/v1.1-preview.2",
    "/personalizer/v1.1-preview.3",
    "/personalizer",
]


def _operation_id(route: APIRoute) -> str:
    """Unique per mount: the same endpoint is served under several base paths."""
    return f"{route.name}{re.sub(r'[^A-Za-z0-9]+', '_', route.path_format)}".rstrip("_")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = SqliteStore(settings.data_dir, settings.sqlite_synchronous)
        app.state.store = store
        app.state.loops = {"default": Loop.open("default", store, settings)}
        log.info("banditloop %s serving data in %s", __version__, settings.data_dir)
        try:
            yield
        finally:
            for loop in app.state.loops.values():
                loop.close()
            store.close()

    app = FastAPI(
        title="banditloop",
        version=__version__,
        description="Personalization service speaking Azure Personalizer's REST API.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    errors.install(app)
    api = APIRouter()
    api.include_router(events_router)
    for prefix in API_PREFIXES:
        app.include_router(api, prefix=prefix)
        app.include_router(api, prefix="/loops/{loop}" + prefix)
    return app
