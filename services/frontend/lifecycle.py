"""The frontend's part of the cache lifecycle, started and stopped with the app
(`cleanup_ctx`, after the runtime): the invalidation watcher that keeps its memory honest,
the pull-time recorder (`update_pull_time`), and the delete service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ..common.background import running
from .pullthrough.deletes import DeleteService
from .pullthrough.pulls import PullRecorder
from .pullthrough.watcher import InvalidationWatcher
from .state import FRONTEND


@dataclass
class FrontendLifecycle:
    deletes: DeleteService
    pulls: PullRecorder | None  # None unless [global] update_pull_time


LIFECYCLE = web.AppKey("lifecycle", FrontendLifecycle)


async def frontend_lifecycle(app: web.Application) -> AsyncIterator[None]:
    frontend = app[FRONTEND]
    runtime = frontend.runtime
    settings = runtime.settings
    watcher = InvalidationWatcher(
        runtime.storage,
        frontend.memory,
        runtime.metrics,
        also_forget=frontend.blobs.fanout.forget_finished,
    )
    await watcher.poll()  # memory answers from the first request on
    pulls = None
    if settings.global_.update_pull_time:
        pulls = PullRecorder(
            runtime.storage, runtime.metrics, settings.eviction.pull_time_resolution_secs
        )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running(watcher.run()))
        if pulls is not None:
            await stack.enter_async_context(running(pulls.run()))
        app[LIFECYCLE] = FrontendLifecycle(DeleteService(runtime.storage), pulls)
        yield
