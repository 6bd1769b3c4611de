"""Cross-cutting concerns: the one place where exceptions become OCI error responses."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from ..common.errors import BackendUnavailable, NotFound, RegistryError, SizeInvalid, Unsupported
from ..common.queue import QueueUnavailable
from ..common.runtime import RUNTIME
from ..common.storage.objects import StorageUnavailable

log = logging.getLogger("simple_registry.frontend")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


def error_response(error: RegistryError) -> web.Response:
    headers = dict(error.headers)
    headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
    return web.Response(
        status=error.status,
        body=json.dumps(error.body()).encode(),
        content_type="application/json",
        headers=headers,
    )


def _from_http_exception(exc: web.HTTPException) -> RegistryError:
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 405:
        return Unsupported("method not allowed")
    if exc.status == 413:
        return SizeInvalid("request too large")
    error = RegistryError(exc.reason or "request failed")
    error.status = exc.status  # type: ignore[misc]
    return error


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as error:
        return error_response(error)
    except (StorageUnavailable, QueueUnavailable) as error:
        log.warning(
            "backend unavailable method=%s path=%s: %s", request.method, request.path, error
        )
        return error_response(BackendUnavailable("storage unavailable; retry later"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and 304s are answers, not errors
        return error_response(_from_http_exception(exc))
    except Exception:
        # Never a traceback to the client; the log has it.
        log.exception("unhandled error method=%s path=%s", request.method, request.path)
        return error_response(RegistryError("internal error; see the registry log"))


ROUTE_LABEL = web.RequestKey("route_label", str)


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app[RUNTIME].metrics
        route = request.get(ROUTE_LABEL, "other")
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.request_duration.labels(route, request.method).observe(
            time.perf_counter() - started
        )


async def add_api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault(*API_VERSION_HEADER)
