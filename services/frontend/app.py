"""The frontend application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..common.config import Settings
from ..common.runtime import RUNTIME, open_runtime
from .blobs import BlobService
from .handlers import BLOBS, PULL, dispatch, healthz, metrics, readyz
from .middlewares import add_api_version_header, oci_errors, request_metrics
from .pull import PullThrough

# Registry requests have no body (pushes are refused), so a small cap suffices.
MAX_REQUEST_BODY = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_metrics, oci_errors],
        client_max_size=MAX_REQUEST_BODY,
        handler_args={"max_line_size": 8190, "max_field_size": 8190},
    )

    async def runtime_context(app: web.Application) -> AsyncIterator[None]:
        runtime = await open_runtime(settings)
        app[RUNTIME] = runtime
        pull = PullThrough(runtime)
        app[PULL] = pull
        app[BLOBS] = BlobService(runtime, pull.jobs)
        try:
            yield
        finally:
            await pull.jobs.flush()
            await runtime.close()

    app.cleanup_ctx.append(runtime_context)
    app.on_response_prepare.append(add_api_version_header)
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
