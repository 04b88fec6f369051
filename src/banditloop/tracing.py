"""Tracing: the caller's W3C trace context, and an opt-in OpenTelemetry exporter.

Off (``otel_exporter = "none"``, the default), a request's ``traceparent`` and
``tracestate`` are kept by the observability middleware in ``trace_context`` only
when it carries them, and sent unchanged with its calls to the loop's recommender,
so a trace goes on through banditloop; nothing of OpenTelemetry is imported.

On (``otlp`` or ``console``), the optional extra ``banditloop[tracing]`` makes a
span of every request (opentelemetry-instrumentation-fastapi, the caller's
traceparent as its parent) and of every recommender call (the httpx
instrumentation, which sends the child span's traceparent), exported in batches:
``otlp`` over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OpenTelemetry's own
variables configure it), ``console`` to standard output.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from .errors import BanditloopError

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

    from .config import Settings

#: The caller's W3C trace context (``traceparent``, ``tracestate``) while a request
#: that carries one runs; passed on to the loop's recommender (recommender.py).
trace_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "trace_context", default=None
)


def tracer_provider(settings: Settings) -> Any | None:
    """The TracerProvider of ``otel_exporter``, or None when tracing is off."""
    if settings.otel_exporter == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:  # pragma: no cover - the extra is installed in dev
        raise BanditloopError(
            "otel_exporter needs the tracing extra: pip install 'banditloop[tracing]'."
        ) from None
    from . import __version__

    exporter: Any
    if settings.otel_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": "banditloop", "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_app(app: FastAPI, provider: Any) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="healthz,readyz,metrics"
    )


def instrument_client(http: httpx.AsyncClient, provider: Any) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(http, tracer_provider=provider)
