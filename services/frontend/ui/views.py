"""The data behind each page, the same for the HTML page and its JSON: gathered from
storage, the snapshot, the counters and the queue, filtered by what the identity may see.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from aiohttp import web

from ...common.config import RepositorySettings
from ...common.errors import NameUnknown, PaginationInvalid
from ...common.oci import Reference, RepositoryName, Tag
from ...common.runtime import RUNTIME
from ..actions import MAX_PAGE_SIZE, DeleteManifest, RetryJob, WarmImage
from ..state import FRONTEND
from .catalog import Image
from .images import ImageView, ManifestView
from .pulls import Pull
from .state import UI
from .stats import Bucket, Window
from .status import (
    QueueStatus,
    UpstreamStatus,
    Usage,
    queue_status,
    storage_usage,
    upstream_statuses,
)
from .visibility import may, visible_images

DEFAULT_PAGE_SIZE = 100
HOUR_SECS = 3600.0
DAY_SECS = 24 * HOUR_SECS


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    settings: RepositorySettings
    images: int
    tags: int
    manifests: int


@dataclass(frozen=True, slots=True)
class RepositoriesView:
    rows: tuple[RepositoryRow, ...]
    snapshot_at: float


@dataclass(frozen=True, slots=True)
class ImageRow:
    image: Image
    size: int
    last_pulled_at: float | None


@dataclass(frozen=True, slots=True)
class NamespacesView:
    repository: RepositorySettings
    rows: tuple[ImageRow, ...]
    total: int  # images matching the filter
    query: str
    next_last: str | None  # `last` of the next page
    page_size: int
    snapshot_at: float


@dataclass(frozen=True, slots=True)
class ImagePage:
    view: ImageView
    repository: RepositorySettings
    may_warm: bool
    may_delete: bool


@dataclass(frozen=True, slots=True)
class ManifestPage:
    view: ManifestView
    repository: RepositorySettings
    may_warm: bool
    may_delete: bool


@dataclass(frozen=True, slots=True)
class CacheView:
    hour: Window
    day: Window
    hour_series: tuple[Bucket, ...]
    day_series: tuple[Bucket, ...]
    upstreams: tuple[UpstreamStatus, ...]
    queue: QueueStatus
    usage: Usage
    pulls: tuple[Pull, ...]
    process_id: int
    started_at: float
    interval_secs: float
    may_retry: bool
    in_flight: int  # upstream downloads streaming now, this process


def page_size(request: web.Request) -> int:
    text = request.query.get("n")
    if text is None:
        return DEFAULT_PAGE_SIZE
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not (
        1 <= int(text) <= MAX_PAGE_SIZE
    ):
        raise PaginationInvalid(
            f"n must be an integer from 1 to {MAX_PAGE_SIZE}", detail={"n": text[:50]}
        )
    return int(text)


def _repository(request: web.Request, key: str) -> RepositorySettings:
    repository = request.app[RUNTIME].settings.repositories.get(key)
    if repository is None:
        raise NameUnknown("no such repository is configured", detail={"repository": key})
    return repository


async def repositories(request: web.Request) -> RepositoriesView:
    ui = request.app[UI]
    snapshot = await ui.catalog.snapshot()
    rows = []
    for repository in request.app[RUNTIME].settings.repositories.values():
        images = await visible_images(request, repository.name, snapshot)
        rows.append(
            RepositoryRow(
                repository,
                images=len(images),
                tags=sum(image.tags for image in images),
                manifests=sum(image.manifests for image in images),
            )
        )
    return RepositoriesView(tuple(rows), snapshot.taken_at)


async def namespaces(request: web.Request, key: str) -> NamespacesView:
    """A page of a repository's images: `q` filters names, `n` and `last` page."""
    ui = request.app[UI]
    repository = _repository(request, key)
    size = page_size(request)
    query = request.query.get("q", "")[:200]
    last = request.query.get("last")
    snapshot = await ui.catalog.snapshot()
    images = await visible_images(request, key, snapshot)
    if query:
        images = [image for image in images if query in image.name]
    total = len(images)
    if last:
        images = [image for image in images if image.name > last]
    page = images[:size]
    sizes = await asyncio.gather(*(ui.catalog.size(image) for image in page))
    rows = tuple(
        ImageRow(image, image_size, ui.pulls.last_pulled(image.name))
        for image, image_size in zip(page, sizes, strict=True)
    )
    next_last = page[-1].name if len(images) > size and page else None
    return NamespacesView(repository, rows, total, query, next_last, size, snapshot.taken_at)


def _owner(request: web.Request, name: RepositoryName) -> RepositorySettings:
    repository = request.app[RUNTIME].router.owner(name.value)
    if repository is None:
        raise NameUnknown("no configured repository covers this name", detail={"name": name.value})
    return repository


async def image(request: web.Request, name: RepositoryName) -> ImagePage:
    repository = _owner(request, name)
    view = await request.app[UI].images.image(name.value)
    if not view.manifest_count:
        raise NameUnknown("nothing of this image is cached", detail={"name": name.value})
    return ImagePage(
        view,
        repository,
        may_warm=await may(request, WarmImage(name, Tag("latest"))),
        may_delete=await may(request, DeleteManifest(name, Tag("latest"))),
    )


async def manifest(
    request: web.Request, name: RepositoryName, reference: Reference
) -> ManifestPage:
    repository = _owner(request, name)
    view = await request.app[UI].images.manifest(name.value, reference)
    tag = reference if isinstance(reference, Tag) else None
    if tag is None and view.node.tags:
        tag = Tag(view.node.tags[0])
    return ManifestPage(
        view,
        repository,
        may_warm=tag is not None and await may(request, WarmImage(name, tag)),
        may_delete=await may(request, DeleteManifest(name, reference)),
    )


async def cache(request: web.Request) -> CacheView:
    ui = request.app[UI]
    frontend = request.app[FRONTEND]
    runtime = frontend.runtime
    now = time.time()
    queue, usage = await asyncio.gather(
        queue_status(runtime.queue, frontend.jobs.degraded, frontend.jobs.dropped),
        storage_usage(runtime.storage, runtime.settings),
    )
    return CacheView(
        hour=ui.sampler.window(HOUR_SECS, now),
        day=ui.sampler.window(DAY_SECS, now),
        hour_series=tuple(ui.sampler.series(HOUR_SECS, 60, now)),
        day_series=tuple(ui.sampler.series(DAY_SECS, 96, now)),
        upstreams=tuple(upstream_statuses(runtime.settings, runtime.upstreams, runtime.metrics)),
        queue=queue,
        usage=usage,
        pulls=tuple(ui.pulls.latest(50)),
        process_id=os.getpid(),
        started_at=ui.sampler.started_at,
        interval_secs=ui.sampler.interval_secs,
        may_retry=await may(request, RetryJob("0")),
        in_flight=frontend.blobs.fanout.downloading,
    )
