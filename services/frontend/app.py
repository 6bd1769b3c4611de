"""The frontend application factory."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from ..common.config import Settings
from ..common.errors import NotFound, Unsupported
from ..common.runtime import RUNTIME, Runtime, open_runtime
from ..common.storage.fs import FsObjectStore
from ..common.storage.layout import STAGING_PREFIX
from .blobs import BlobService
from .fanout import Fanout
from .handlers import BLOBS, PULL, dispatch, healthz, metrics, readyz
from .middlewares import add_api_version_header, oci_errors, request_metrics
from .pull import PullThrough

# Registry requests have no body (pushes are refused), so a small cap suffices.
MAX_REQUEST_BODY = 64 * 1024


def _fanout_for(runtime: Runtime) -> tuple[Fanout, Callable[[Path], str] | None]:
    """With filesystem storage, spool into its staging folder so that the cacher can commit
    the spooled bytes by a rename; otherwise spool into a local temporary folder."""
    objects = runtime.storage.objects
    if isinstance(objects, FsObjectStore):
        return Fanout(objects.root / STAGING_PREFIX), lambda path: f"{STAGING_PREFIX}/{path.name}"
    # One folder for every worker and restart: file names are unique, and stale ones (a
    # process that died mid-download) are swept at start-up.
    return Fanout(Path(tempfile.gettempdir()) / "simple-registry-spool"), None


async def _no_expectations(request: web.Request) -> None:
    return None


async def _no_route(request: web.Request) -> web.StreamResponse:
    if request.path in ("/healthz", "/readyz", "/metrics"):
        raise Unsupported(f"method {request.method} is not allowed")
    raise NotFound("no such route")


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
        fanout, staging_key = _fanout_for(runtime)
        fanout.sweep_stale()
        app[BLOBS] = BlobService(runtime, pull.jobs, fanout, staging_key)
        try:
            yield
        finally:
            await fanout.close()
            await pull.jobs.flush()
            await runtime.close()

    app.cleanup_ctx.append(runtime_context)
    app.on_response_prepare.append(add_api_version_header)
    # No route uses `Expect`; aiohttp's default handler would answer an unknown one with a
    # text/plain 417 before any middleware could make it an OCI error.
    for method, path, handler in (
        ("*", "/v2", dispatch),
        ("*", "/v2/{tail:.*}", dispatch),
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics),
        ("*", r"/{tail:[\s\S]*}", _no_route),
    ):
        app.router.add_route(method, path, handler, expect_handler=_no_expectations)
    return app
