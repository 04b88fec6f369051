"""``create_app(settings)``: the FastAPI application; its lifespan opens the service
(store and loops, service.py) and what the API adds to it."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from . import __version__
from .api import errors
from .api.admin import router as admin_router
from .api.dashboard import router as dashboard_router
from .api.deps import named_loop
from .api.evaluations import router as evaluations_router
from .api.events import router as events_router
from .api.fastpath import FastPath
from .api.items import router as items_router
from .api.loops import router as loops_router
from .api.operations import router as operations_router
from .api.recommendations import router as recommendations_router
from .clock import WALL, Clock
from .config import Settings
from .dashboard import Dashboards
from .limits import LimitsMiddleware
from .observability import ObservabilityMiddleware, configure_logging
from .recommendations.builder import Models
from .recommendations.service import Recommendations
from .rerank import Reranker
from .service import open_service
from .store import is_postgres
from .tracing import instrument_app, instrument_client, tracer_provider

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
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)


def settle_heap() -> None:
    """Tune the garbage collector once start-up is done. What start-up made (app, schemas,
    models) lives as long as the process: frozen, the full collections that requests in
    flight trigger no longer scan it; and young collections run 30x less often. Under
    load the collector had taken a third of a worker's time (docs/performance.md)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def _operation_id(route: APIRoute) -> str:
    """Unique per mount: the same endpoint is served under several base paths."""
    return f"{route.name}{re.sub(r'[^A-Za-z0-9]+', '_', route.path_format)}".rstrip("_")


def create_app(settings: Settings, worker: bool = False, clock: Clock = WALL) -> FastAPI:
    """The service. A ``worker`` is one of several rank processes of ``serve --workers``:
    it neither owns the data directory nor trains, and follows the store for models.
    ``clock``: the time the loops and the dashboard go by (tests move it, clock.py)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        shared = is_postgres(settings.store)  # other servers use the store too
        service = open_service(
            settings,
            train=settings.trainer and not worker,
            watch=worker or shared,
            own=not worker,
            clock=clock,
        )
        registry = service.registry
        app.state.reranker = reranker = Reranker()  # recommender calls (docs/reranking.md)
        if provider is not None:
            instrument_client(reranker.http, provider)
        models = Models(lambda: registry.loops, settings.tracking_poll_seconds)
        app.state.recommendations = Recommendations(models, reranker)  # recommendations.md
        try:
            app.state.service, app.state.registry = service, registry
            models.thread.start()
            settle_heap()
            log.info(
                "banditloop %s serving %d loop(s) from %s",
                __version__,
                len(registry.loops),
                "PostgreSQL" if shared else settings.data_dir,
            )
            if not any(registry.keys.values()):
                log.warning(
                    "NO API KEYS CONFIGURED: every caller may rank, reward and "
                    "administer. Set admin_keys and client_keys before exposing it."
                )
            yield
        finally:
            models.thread.stop()
            gc.unfreeze()  # what start-up made may be garbage now (tests start many apps)
            await reranker.aclose()
            service.close()
            if provider is not None:
                provider.shutdown()  # exports the last spans

    app = FastAPI(
        title="banditloop",
        version=__version__,
        description="Personalization service speaking Azure Personalizer's REST API.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    errors.install(app)
    mounts = [m for prefix in API_PREFIXES for m in (prefix, "/loops/{loop}" + prefix)]
    # innermost: behind the limits, in front of the routing
    app.add_middleware(FastPath, state=app.state, mounts=mounts)
    app.add_middleware(  # inside observability, so that shed requests are counted
        LimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_import_bytes=settings.max_import_bytes,
        max_concurrent_requests=settings.max_concurrent_requests,
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
    )
    app.add_middleware(ObservabilityMiddleware, settings=settings)
    provider = tracer_provider(settings)  # None unless otel_exporter is set (tracing.py)
    if provider is not None:
        instrument_app(app, provider)
    app.state.dashboards = Dashboards(settings.dashboard_events, clock)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    api = APIRouter()
    api.include_router(events_router)
    api.include_router(admin_router)
    api.include_router(evaluations_router)
    api.include_router(items_router)
    api.include_router(recommendations_router)
    for prefix in mounts:
        named = [Depends(named_loop)] if "{loop}" in prefix else []
        app.include_router(api, prefix=prefix, dependencies=named)
    app.include_router(loops_router)
    app.include_router(operations_router)
    app.include_router(dashboard_router)
    return app


WORKER_SETTINGS_ENV = "BANDITLOOP_WORKER_SETTINGS"


def worker_app() -> FastAPI:
    """Factory for uvicorn's worker processes: settings come from the supervisor."""
    import os

    return create_app(Settings.model_validate_json(os.environ[WORKER_SETTINGS_ENV]), worker=True)
