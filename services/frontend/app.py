"""The frontend application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from aiohttp import web

from ..common import tracing
from ..common.config import Settings
from ..common.errors import NotFound, Unsupported
from ..common.reload import ConfigWatcher
from ..common.runtime import RUNTIME, open_runtime
from . import ui
from .access.control import AccessControl
from .access.middleware import ACCESS, access_control
from .access.tls import ServerTls
from .handlers import dispatch
from .lifecycle import frontend_lifecycle
from .middlewares import add_api_version_header, oci_errors, request_metrics, trace_requests
from .pullthrough import handover
from .pullthrough.blobs import BlobService
from .pullthrough.jobs import JobSubmitter
from .pullthrough.manifests import ManifestService
from .pullthrough.memory import PullMemory
from .pullthrough.referrers import ReferrersService
from .pullthrough.tags import TagLister
from .state import FRONTEND, Frontend
from .status import healthz, metrics, readyz

log = logging.getLogger(__name__)

SERVER_TLS = web.AppKey("server_tls", ServerTls)

# Registry requests have no body (pushes are refused), so a small cap suffices.
MAX_REQUEST_BODY = 64 * 1024


async def _no_expectations(request: web.Request) -> None:
    return None


async def _no_route(request: web.Request) -> web.StreamResponse:
    if request.path in ("/healthz", "/readyz", "/metrics"):
        raise Unsupported(f"method {request.method} is not allowed")
    raise NotFound("no such route")


def _reloading(
    settings: Settings, paths: list[Path]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: watch the configuration files; apply a new configuration in place to
    the router, the upstreams and the access control (a request in flight keeps its own)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        runtime = app[RUNTIME]

        def apply(new: Settings) -> None:
            runtime.apply(new)
            app[ACCESS].reconfigure(new)

        watcher = ConfigWatcher(paths, settings, runtime.metrics, apply)
        async for _ in watcher.watch():
            yield

    return context


def create_app(settings: Settings, *, config_paths: Sequence[Path] = ()) -> web.Application:
    """The frontend; with `config_paths`, their changes (and SIGHUP) reload it live."""
    app = web.Application(
        # Tracing costs nothing when off: its middleware is not even installed.
        middlewares=[
            *([trace_requests] if tracing.enabled() else []),
            request_metrics,
            oci_errors,
            access_control,
        ],
        client_max_size=MAX_REQUEST_BODY,
        handler_args={"max_line_size": 8190, "max_field_size": 8190},
    )

    async def runtime_context(app: web.Application) -> AsyncIterator[None]:
        runtime = await open_runtime(settings)
        app[RUNTIME] = runtime
        app[ACCESS] = AccessControl(settings, runtime.session, runtime.metrics)
        memory = PullMemory(runtime.metrics)
        jobs = JobSubmitter(runtime.queue, runtime.metrics)
        hand_over = handover.for_storage(runtime.storage, jobs)
        blobs = BlobService(
            runtime.storage,
            runtime.upstreams,
            memory,
            jobs,
            hand_over,
            runtime.metrics,
            max_blob_size=settings.global_.max_blob_size,
            redirect=settings.global_.enable_blob_redirect,
        )
        removed = blobs.fanout.sweep_stale()
        if removed:
            log.info("removed %d spool files left by a previous run", removed)
        app[FRONTEND] = Frontend(
            runtime=runtime,
            memory=memory,
            jobs=jobs,
            manifests=ManifestService(
                runtime.storage,
                runtime.upstreams,
                memory,
                jobs,
                runtime.metrics,
                settings.global_.max_manifest_size,
            ),
            blobs=blobs,
            referrers=ReferrersService(
                runtime.storage, runtime.upstreams, jobs, settings.global_.max_manifest_size
            ),
            tags=TagLister(runtime.storage, runtime.upstreams, runtime.queue),
        )
        try:
            yield
        finally:
            await blobs.close()
            await jobs.flush()
            await runtime.close()

    app.cleanup_ctx.append(runtime_context)
    if config_paths:
        app.cleanup_ctx.append(_reloading(settings, list(config_paths)))
    app.cleanup_ctx.append(frontend_lifecycle)
    if settings.server.tls is not None:
        server_tls = ServerTls(settings.server.tls)
        app[SERVER_TLS] = server_tls
        app.cleanup_ctx.append(server_tls.watch)
    app.on_response_prepare.append(add_api_version_header)
    if settings.ui.enabled:
        # Before the catch-all routes below, which share the UI's path prefixes.
        ui.setup(app, settings, expect_handler=_no_expectations)
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
