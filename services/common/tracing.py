"""OpenTelemetry traces over OTLP/HTTP (`[observability.tracing]`), off by default.

Off, every call here is a no-op that allocates nothing: the hot path pays a boolean check.
On: a span per request (action, repository, cache outcome), child spans for upstream calls,
storage and the enqueue, and the trace context travels inside the cache job
(`CacheJob.traceparent`), so the cacher's work joins the pull's trace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from .config import TracingSettings

log = logging.getLogger(__name__)

_enabled = False
_tracer: Any = None


def enabled() -> bool:
    return _enabled


def configure(settings: TracingSettings | None, service: str) -> None:
    """Set up the exporter once per process (the OpenTelemetry SDK is imported only then)."""
    global _enabled, _tracer
    if settings is None:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(settings.sampling_rate)),
    )
    endpoint = settings.endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500)
    )
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("simple_registry")
    _enabled = True
    log.info("tracing to %s sampling_rate=%s service=%s", endpoint, settings.sampling_rate, service)


def shutdown() -> None:
    """Send what is buffered (at stop)."""
    if not _enabled:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    with contextlib.suppress(Exception):
        provider.shutdown()  # type: ignore[attr-defined]


@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, parent: str | None = None
) -> Iterator[None]:
    """A child span of the current one (or of the W3C `parent` traceparent given)."""
    if not _enabled:
        yield
        return
    context = None
    if parent is not None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract({"traceparent": parent})
    with _tracer.start_as_current_span(name, context=context, attributes=dict(attributes or {})):
        yield


def annotate(key: str, value: Any) -> None:
    """Set an attribute on the current span (a cache outcome, a status)."""
    if not _enabled:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute(key, value)


def traceparent() -> str | None:
    """The current span as a W3C traceparent, to carry inside a cache job."""
    if not _enabled:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")
