"""What the web UI holds while the frontend runs, under one typed app key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from ...common.config import UiSettings
from ...common.lru import LruCache
from .assets import Assets
from .catalog import Catalog, Image
from .images import Images
from .pulls import RecentPulls
from .stats import CounterSampler

VISIBLE_BYTES = 8 * 1024 * 1024


@dataclass
class Ui:
    settings: UiSettings
    assets: Assets
    pulls: RecentPulls
    catalog: Catalog
    images: Images
    sampler: CounterSampler
    # The images each identity may see, per repository and storage snapshot.
    visible: LruCache[list[Image]] = field(default_factory=lambda: LruCache(VISIBLE_BYTES))
    # Warms started from the UI run as tasks of their own: a browser that goes away does
    # not cancel them (they are awaited, or cancelled, at shutdown).
    warms: set[asyncio.Task[object]] = field(default_factory=set)


UI = web.AppKey("ui", Ui)
