"""Cross-cutting concerns: errors into OCI bodies (via `errors`), request metrics, and the
API version header."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from ..common import tracing
from ..common.routing import Route
from ..common.runtime import RUNTIME
from .access.middleware import ACTION, ROUTE
from .errors import API_VERSION_HEADER, error_response, to_registry_error


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and 304s are answers, not errors
        return error_response(to_registry_error(request, exc))
    except Exception as error:
        return error_response(to_registry_error(request, error))


async def _answered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response; its status (an HTTPException's too) under STATUS."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        request[STATUS] = exc.status
        raise
    request[STATUS] = response.status
    return response


STATUS = web.RequestKey("status", int)


@web.middleware
async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A span per request (installed only with [observability.tracing])."""
    with tracing.span(f"{request.method} {request.path.split('/', 2)[1] or '/'}"):
        try:
            return await _answered(request, handler)
        finally:
            tracing.annotate("http.request.method", request.method)
            tracing.annotate("http.response.status_code", request.get(STATUS, 500))
            action = request.get(ACTION)
            if action is not None:
                tracing.annotate("registry.action", action.name)
                if action.repository is not None:
                    tracing.annotate("registry.name", action.repository.value)
            route = request.get(ROUTE)
            if isinstance(route, Route):
                tracing.annotate("registry.repository", route.repository.name)


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await _answered(request, handler)
    finally:
        metrics = request.app[RUNTIME].metrics
        action = request.get(ACTION)
        route = action.route_label if action is not None else "other"
        status = str(request.get(STATUS, 500))
        metrics.requests.labels(route, request.method, status).inc()
        metrics.request_duration.labels(route, request.method).observe(
            time.perf_counter() - started
        )


async def add_api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault(*API_VERSION_HEADER)
