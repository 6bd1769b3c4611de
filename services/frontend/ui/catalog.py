"""What storage holds, for the listings: every image name with its counts, from one listing
of storage kept as a snapshot, and the bytes of an image from its layer links.

A listing of 10,000 images walks every link in storage; pages must not wait for that. The
snapshot is rebuilt in the background when it is older than its refresh age, which grows
with what a rebuild costs (`COST_FACTOR` times its duration, so rebuilding never takes
more than a small share of the process), and pages answer from the snapshot they have,
saying how old it is. After the UI changed something (warm, delete, retry) the next page
waits for a fresh snapshot when one is quick to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...common.lru import LruCache
from ...common.routing import Router
from ...common.storage import RegistryStorage

if TYPE_CHECKING:
    from ...common.storage.layout import StoredName

log = logging.getLogger(__name__)

MIN_AGE_SECS = 10.0
COST_FACTOR = 50.0
# After a change made through the UI, a snapshot that took less than this is awaited.
QUICK_SECS = 0.5
SIZES_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Image:
    name: str  # the storage name, e.g. docker-io/library/nginx
    repository: str  # the configured repository key it belongs to
    tags: int
    manifests: int
    blobs: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    images: Mapping[str, tuple[Image, ...]]  # by repository key, sorted by name
    taken_at: float  # unix seconds
    duration_secs: float

    def of(self, repository: str) -> tuple[Image, ...]:
        return self.images.get(repository, ())


class Catalog:
    def __init__(self, storage: RegistryStorage, router: Router):
        self.storage = storage
        self.router = router
        self._snapshot: Snapshot | None = None
        self._building: asyncio.Task[Snapshot] | None = None
        self._stale = False
        self._sizes: LruCache[int] = LruCache(SIZES_BYTES)

    async def snapshot(self) -> Snapshot:
        current = self._snapshot
        if current is None or (self._stale and current.duration_secs < QUICK_SECS):
            return await asyncio.shield(self._rebuild())
        age = time.time() - current.taken_at
        if self._stale or age > max(MIN_AGE_SECS, COST_FACTOR * current.duration_secs):
            self._rebuild()
        return current

    def invalidate(self) -> None:
        """Storage changed through the UI: take a new snapshot soon."""
        self._stale = True

    def _rebuild(self) -> asyncio.Task[Snapshot]:
        if self._building is None or self._building.done():
            self._stale = False
            self._building = asyncio.create_task(self._build())
            self._building.add_done_callback(self._built)
        return self._building

    def _built(self, task: asyncio.Task[Snapshot]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.warning("listing storage for the web UI failed: %s", error)
            self._stale = True
            return
        self._snapshot = task.result()

    async def _build(self) -> Snapshot:
        started = time.monotonic()
        taken_at = time.time()
        grouped: dict[str, list[Image]] = {}
        for stored in await self.storage.list_names():
            image = self._image(stored)
            if image is not None:
                grouped.setdefault(image.repository, []).append(image)
        duration = time.monotonic() - started
        log.debug("web UI storage snapshot: %d names in %.3fs", len(grouped), duration)
        return Snapshot({key: tuple(items) for key, items in grouped.items()}, taken_at, duration)

    def _image(self, stored: StoredName) -> Image | None:
        """An image with at least one manifest, under a configured repository."""
        repository = self.router.owner(stored.name)
        if repository is None or stored.name == repository.name or not stored.revisions:
            return None
        return Image(stored.name, repository.name, stored.tags, stored.revisions, stored.layers)

    async def size(self, image: Image) -> int:
        """Bytes of the blobs pulled through the image (its layer links). Remembered by
        name and link count: a link records the size of content-addressed bytes, so the
        sum changes only when the links do."""
        key = (image.name, image.blobs)
        size = self._sizes.get(key)
        if size is None:
            size = sum((await self.storage.layer_links(image.name)).values())
            self._sizes.put(key, size, weight=len(image.name) + 64)
        return size

    async def close(self) -> None:
        if self._building is not None:
            self._building.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._building
