"""The resources one process holds: storage, queue, upstream session, router.

Opened once (an aiohttp `cleanup_ctx` for the frontend, the cacher's own run loop
otherwise) and shared by the frontend and the embedded cacher in `server` mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from .config import FsStorageSettings, S3StorageSettings, Settings
from .metrics import Metrics
from .queue import JobQueue
from .queue.memory import MemoryQueue
from .routing import Router
from .storage import ObjectStore, RegistryStorage
from .storage.fs import FsObjectStore
from .upstream.connector import UpstreamConnector
from .upstream.pool import UpstreamPool
from .upstream.targets import AddressPins

log = logging.getLogger(__name__)

USER_AGENT = "simple-registry/0.1 (+pull-through cache)"


@dataclass
class Runtime:
    settings: Settings
    storage: RegistryStorage
    queue: JobQueue
    session: aiohttp.ClientSession
    upstreams: UpstreamPool
    router: Router
    metrics: Metrics

    def apply(self, settings: Settings) -> None:
        """A reloaded configuration: routes and upstreams from the next request on."""
        self.settings = settings
        self.router.reconfigure(settings.repositories, settings.global_.default_repository)
        self.upstreams.reconfigure(settings.repositories, settings.global_)

    async def close(self) -> None:
        await self.session.close()
        await self.queue.close()
        await self.storage.objects.close()


RUNTIME = web.AppKey("runtime", Runtime)


def build_object_store(settings: Settings) -> ObjectStore:
    storage = settings.storage
    if isinstance(storage, FsStorageSettings):
        return FsObjectStore(storage.root_dir, storage.sync_to_disk)
    if isinstance(storage, S3StorageSettings):
        from .storage.s3 import S3ObjectStore

        return S3ObjectStore(storage, redirect=settings.global_.enable_blob_redirect)
    raise TypeError(f"unknown storage settings {storage!r}")


def build_queue(settings: Settings) -> JobQueue:
    if settings.queue is not None:
        from .queue.redis import RedisQueue

        return RedisQueue(settings.queue)
    return MemoryQueue()


async def open_runtime(settings: Settings, queue: JobQueue | None = None) -> Runtime:
    metrics = Metrics()
    objects = build_object_store(settings)
    await objects.open()
    queue = queue or build_queue(settings)
    await queue.open()
    pins = AddressPins()
    session = aiohttp.ClientSession(
        connector=UpstreamConnector(pins, limit=256, limit_per_host=64, ttl_dns_cache=300),
        auto_decompress=False,
        # Bigger reads of upstream blobs: fewer, larger chunks through the spool.
        read_bufsize=512 * 1024,
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )
    return Runtime(
        settings=settings,
        storage=RegistryStorage(objects),
        queue=queue,
        session=session,
        upstreams=UpstreamPool(
            settings.repositories,
            session,
            metrics,
            settings.global_,
            pins,
        ),
        router=Router(settings.repositories, settings.global_.default_repository),
        metrics=metrics,
    )
