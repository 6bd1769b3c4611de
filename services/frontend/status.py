"""Health and metrics endpoints: `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from ..common.metrics import CONTENT_TYPE_LATEST
from ..common.runtime import RUNTIME
from ..common.scrape import render_metrics
from .state import FRONTEND, Frontend


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
    depth = None
    if checks["queue"] == "ok":
        request.app[FRONTEND].jobs.queue_reachable()
        with contextlib.suppress(Exception):
            depth = await asyncio.wait_for(runtime.queue.depth(), 2.0)
    activity = _activity(request.app[FRONTEND], depth)
    return web.json_response(
        {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "idle": is_idle(activity),
            "activity": activity,
        },
        status=200 if ready else 503,
    )


def _activity(frontend: Frontend, queue_depth: int | None) -> dict[str, int | None]:
    """What may still reach an upstream: downloads (with their hand-over), manifest
    fetches, jobs on their way to the queue, and the queue's jobs waiting or running (with
    the embedded cacher, a running job stays in the queue until it is acknowledged)."""
    return {
        "downloads": frontend.blobs.fanout.busy,
        "manifest_fetches": frontend.manifests.fetches_in_flight,
        "jobs_submitting": frontend.jobs.pending,
        "queue_depth": queue_depth,
    }


def is_idle(activity: dict[str, int | None]) -> bool:
    """Nothing in progress; a queue that cannot be read (None) has nothing we could run."""
    return not any(activity.values())
