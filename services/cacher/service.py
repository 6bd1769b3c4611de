"""Running a cacher: embedded in the `server` process, or on its own (`cacher` command)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from ..common import tracing
from ..common.background import running
from ..common.config import Settings
from ..common.listen import listening_socket
from ..common.metrics import CONTENT_TYPE_LATEST
from ..common.reload import ConfigWatcher
from ..common.runtime import RUNTIME, Runtime, open_runtime
from ..common.scrape import render_metrics
from .consumer import Cacher
from .lifecycle.scheduler import run_lifecycle

log = logging.getLogger(__name__)

CACHER = web.AppKey("cacher", Cacher)


async def embedded_cacher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx for `server`: a cacher over the frontend's runtime (in-process queue)."""
    runtime = app[RUNTIME]
    cacher = Cacher(runtime)
    app[CACHER] = cacher
    stop = asyncio.Event()
    task = asyncio.create_task(cacher.run(stop, runtime.settings.server.drain_timeout_secs))
    # Stopped at once, even mid-run, once the job loop has drained.
    async with running(run_lifecycle(runtime, stop)):
        try:
            yield
        finally:
            stop.set()
            await task


def _status_app(runtime: Runtime, cacher: Cacher) -> web.Application:
    """/metrics, /healthz and /readyz of a standalone cacher."""

    async def metrics(request: web.Request) -> web.Response:
        body = await render_metrics(runtime)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "consumer": cacher.consumer})

    async def readyz(request: web.Request) -> web.Response:
        checks = {}
        for name, ping in (
            ("storage", runtime.storage.objects.ping),
            ("queue", runtime.queue.ping),
        ):
            try:
                await asyncio.wait_for(ping(), 2.0)
                checks[name] = "ok"
            except Exception as error:
                checks[name] = f"unavailable: {error or type(error).__name__}"
        ready = all(value == "ok" for value in checks.values())
        depth = None
        if checks["queue"] == "ok":
            with contextlib.suppress(Exception):
                depth = await asyncio.wait_for(runtime.queue.depth(), 2.0)
        # Idle: no job running here and none waiting (an unreadable queue has none for us).
        activity = {"jobs_running": cacher.running, "queue_depth": depth}
        return web.json_response(
            {
                "status": "ready" if ready else "not ready",
                "checks": checks,
                "idle": not any(activity.values()),
                "activity": activity,
            },
            status=200 if ready else 503,
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def run_standalone(settings: Settings, config_paths: Sequence[Path] = ()) -> None:
    """The `cacher` command: consume jobs until SIGTERM/SIGINT, then drain; with
    `config_paths`, their changes (and SIGHUP) reload the repositories and policies live."""
    tracing.configure(settings.observability.tracing, "simple-registry-cacher")
    # Bound first: a taken port stops start-up before anything is opened.
    sock = listening_socket(settings.cacher.metrics_bind_address, settings.cacher.metrics_port)
    runtime = await open_runtime(settings)
    cacher = Cacher(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    status = _status_app(runtime, cacher)
    if config_paths:
        watcher = ConfigWatcher(list(config_paths), settings, runtime.metrics, runtime.apply)
        status.cleanup_ctx.append(watcher.watch)
    runner = web.AppRunner(status, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    try:
        await site.start()
        log.info(
            "cacher status on %s:%d (/metrics, /healthz, /readyz)",
            settings.cacher.metrics_bind_address,
            settings.cacher.metrics_port,
        )
        async with running(run_lifecycle(runtime, stop)):
            await cacher.run(stop, settings.server.drain_timeout_secs)
    finally:
        await runner.cleanup()
        await runtime.close()
