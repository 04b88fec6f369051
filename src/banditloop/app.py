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
from .api.admin import router as admin_router
from .api.evaluations import router as evaluations_router
from .api.events import router as events_router
from .api.loops import router as loops_router
from .config import Settings
from .registry import Registry
from .store import SqliteStore
from .store.lock import DataDirLock

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
        lock = DataDirLock(settings.data_dir).acquire()
        store = SqliteStore(settings.data_dir, settings.sqlite_synchronous)
        registry = Registry(store, settings)
        try:
            registry.open()
            app.state.registry = registry
            log.info(
                "banditloop %s serving %d loop(s) from %s",
                __version__,
                len(registry.loops),
                settings.data_dir,
            )
            if not any(registry.keys.values()):
                log.warning(
                    "NO API KEYS CONFIGURED: every caller may rank, reward and "
                    "administer. Set admin_keys and client_keys before exposing it."
                )
            yield
        finally:
            registry.close()
            store.close()
            lock.release()

    app = FastAPI(
        title="banditloop",
        version=__version__,
        description="Personalization service speaking Azure Personalizer's REST API.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    errors.install(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    api = APIRouter()
    api.include_router(events_router)
    api.include_router(admin_router)
    api.include_router(evaluations_router)
    for prefix in API_PREFIXES:
        app.include_router(api, prefix=prefix)
        app.include_router(api, prefix="/loops/{loop}" + prefix)
    app.include_router(loops_router)
    return app
