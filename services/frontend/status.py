"""Health and metrics endpoints: `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..common.metrics import CONTENT_TYPE_LATEST
from ..common.runtime import RUNTIME
from ..common.scrape import render_metrics
from .state import FRONTEND


async def metrics(request: web.Request) -> web.Response:
    body = await render_metrics(request.app[RUNTIME])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks: dict[str, str] = {}
    ready = True
    try:
        await asyncio.wait_for(runtime.storage.objects.ping(), 5.0)
        checks["storage"] = "ok"
    except Exception as error:
        checks["storage"] = f"unavailable: {error}"
        ready = False
    try:
        await asyncio.wait_for(runtime.queue.ping(), 2.0)
        checks["queue"] = "ok"
    except Exception as error:
        # Caching is degraded, pulls still work: still ready.
        checks["queue"] = f"degraded: {error}"
    if checks["queue"] == "ok":
        request.app[FRONTEND].jobs.queue_reachable()
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
