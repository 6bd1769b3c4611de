"""The web UI's routes and resources, registered by the app factory when `[ui] enabled`.

Routes (their match_info keys tell `actions.parse_ui_action` which one matched, so the
access middleware decides on the right action before any handler runs):

    /_ui/static/<file>                   the assets                     {ui_asset}
    /<repository key>                    a configured repository        {ui_repository}
    /, /_cache, /<name>, /<name>:<tag>, /<name>@<digest>   the pages    {ui_page}
    /v2/_angos/...                       the JSON API                   {ui_api}
    /v2/<name>/_angos/...                the JSON API of one image      {ui_namespace}, {ui_api}

They must be registered before the frontend's own catch-all routes (same path prefix:
aiohttp tries those in the order they were added).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ...common.config import Settings
from ...common.runtime import RUNTIME
from ..access.middleware import ACTION
from ..actions import UiAsset
from . import api, pages
from .assets import Assets
from .catalog import Catalog
from .images import Images
from .pulls import RecentPulls
from .state import UI, Ui
from .stats import CounterSampler

# A name as the route sees it (validated by RepositoryName.parse afterwards).
_NAME_PATTERN = r"[a-z0-9][a-z0-9._/-]*?"
ALL = r"[\s\S]*"


async def asset(request: web.Request) -> web.StreamResponse:
    action = request[ACTION]
    assert isinstance(action, UiAsset)
    return request.app[UI].assets.response(request, action.path)


def setup(app: web.Application, settings: Settings, **route_options: Any) -> None:
    """Add the UI's routes, its response hooks and its resources to the frontend app."""
    assets = Assets()
    pulls = RecentPulls()

    async def responding(request: web.Request, response: web.StreamResponse) -> None:
        """Every response, as it is about to be sent (one receiver, cheap on a pull): a pull
        goes into the recent pulls; after a delete (the registry's DELETE, from the UI or any
        client) the listings take a new snapshot of storage soon."""
        method = request.method
        if method == "GET":
            pulls.note(request, response)
        elif method == "DELETE" and response.status == 202 and UI in app:
            app[UI].catalog.invalidate()

    app.on_response_prepare.append(responding)

    async def ui_context(app: web.Application) -> AsyncIterator[None]:
        runtime = app[RUNTIME]
        ui = Ui(
            settings=settings.ui,
            assets=assets,
            pulls=pulls,
            catalog=Catalog(runtime.storage, runtime.router),
            images=Images(runtime.storage, pulls, settings.global_.update_pull_time),
            sampler=CounterSampler(runtime.metrics, settings.ui.stats_interval_secs),
        )
        app[UI] = ui
        sampling = asyncio.create_task(ui.sampler.run())
        try:
            yield
        finally:
            sampling.cancel()
            for task in (sampling, *ui.warms):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await ui.catalog.close()

    app.cleanup_ctx.append(ui_context)
    router = app.router
    router.add_get("/_ui/static/{ui_asset:[A-Za-z0-9._-]+}", asset, **route_options)
    # Longest first: a key that is a prefix of another must not shadow it.
    for key in sorted(settings.repositories, key=len, reverse=True):
        router.add_get(f"/{{ui_repository:{re.escape(key)}}}", pages.handle, **route_options)
    router.add_get(f"/{{ui_page:{ALL}}}", pages.handle, **route_options)
    router.add_route("*", f"/v2/_angos/{{ui_api:{ALL}}}", api.handle, **route_options)
    router.add_route(
        "*",
        f"/v2/{{ui_namespace:{_NAME_PATTERN}}}/_angos/{{ui_api:{ALL}}}",
        api.handle,
        **route_options,
    )
