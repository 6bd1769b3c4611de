"""Running a cacher: embedded in the `server` process, or on its own (`cacher` command)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ..common.runtime import RUNTIME
from .worker import Cacher

CACHER = web.AppKey("cacher", Cacher)


async def embedded_cacher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx for `server`: a cacher over the frontend's runtime (in-process queue)."""
    runtime = app[RUNTIME]
    cacher = Cacher(runtime)
    app[CACHER] = cacher
    stop = asyncio.Event()
    task = asyncio.create_task(cacher.run(stop, runtime.settings.server.drain_timeout_secs))
    try:
        yield
    finally:
        stop.set()
        await task
