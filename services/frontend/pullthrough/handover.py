"""Handing a verified spool to the cacher, so it commits those bytes without a second fetch.

One strategy is chosen at start-up from the storage backend (`for_storage`):

- small blobs travel inline, inside the job, whatever the backend;
- filesystem storage: the spool already sits in the store's staging folder, the job names
  it and the cacher verifies it and commits it by a rename;
- S3: the spool is uploaded to the bucket's staging prefix, and the cacher verifies it and
  commits it with a server-side copy.

Either way the cacher falls back to fetching the blob itself when the staged bytes are
missing or wrong, and remains the only writer of committed content.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from ...common.queue import CacheJob, JobKind
from ...common.queue.jobs import INLINE_LIMIT
from ...common.routing import Route
from ...common.storage import RegistryStorage
from ...common.storage.fs import FsObjectStore
from ...common.storage.staging import STAGING_PREFIX, staged_key
from .jobs import JobSubmitter
from .spool import Spool, SpoolState

log = logging.getLogger(__name__)

STAGING_CHUNK_SIZE = 1024 * 1024
# Each S3 staging upload holds up to one multipart part in memory: a few at a time.
STAGING_CONCURRENCY = 2


class HandOver(abc.ABC):
    def __init__(self, storage: RegistryStorage, jobs: JobSubmitter, spool_dir: Path):
        self.storage = storage
        self.jobs = jobs
        self.spool_dir = spool_dir

    async def hand_over(self, route: Route, spool: Spool) -> None:
        """A download finished and verified: enqueue its cache job."""
        job = CacheJob(
            kind=JobKind.BLOB,
            repository=route.repository.name,
            remote_name=route.remote_name,
            digest=str(spool.digest),
            size=spool.written,
        )
        if spool.written <= INLINE_LIMIT:
            data = await asyncio.to_thread(spool.path.read_bytes)
            queued = await self.jobs.submit_now(replace(job, data=data))
        else:
            queued = await self._hand_over_staged(job, spool)
        if not queued:
            spool.state = SpoolState.UNCLAIMED

    @abc.abstractmethod
    async def _hand_over_staged(self, job: CacheJob, spool: Spool) -> bool:
        """Stage the spool and enqueue its job; True when the job was queued."""


class RenameStaged(HandOver):
    """Filesystem storage: the spool file is the staged object. It moves out of this
    process's spool folder first (which a restart of this process empties) into the
    staging folder itself, where it belongs to the job."""

    async def _hand_over_staged(self, job: CacheJob, spool: Spool) -> bool:
        staged = self.spool_dir / spool.path.name
        try:
            await asyncio.to_thread(os.replace, spool.path, staged)
        except OSError as error:
            log.warning("cannot stage %s (%s); the cacher will fetch it", spool.digest, error)
            return await self.jobs.submit_now(job)
        spool.path = staged  # later readers open it there
        if await self.jobs.submit_now(replace(job, staged=staged_key(staged.name))):
            spool.state = SpoolState.HANDED_OVER  # the cacher renames it away
            return True
        return False


class CopyStaged(HandOver):
    """S3: the spool is uploaded to the bucket's staging prefix."""

    def __init__(self, storage: RegistryStorage, jobs: JobSubmitter, spool_dir: Path):
        super().__init__(storage, jobs, spool_dir)
        self._slots = asyncio.Semaphore(STAGING_CONCURRENCY)

    async def _hand_over_staged(self, job: CacheJob, spool: Spool) -> bool:
        key = await self._upload(spool)
        if await self.jobs.submit_now(replace(job, staged=key)):
            return True
        if key is not None:
            with contextlib.suppress(Exception):
                await self.storage.objects.delete(key)
        return False

    async def _upload(self, spool: Spool) -> str | None:
        """The staged key, or None when staging failed (the cacher then fetches the blob)."""
        key = staged_key(spool.path.name)
        spool.state = SpoolState.HANDING_OVER
        try:
            async with self._slots:
                writer = await self.storage.objects.writer(key)
                try:
                    with open(spool.path, "rb") as file:
                        while chunk := await asyncio.to_thread(file.read, STAGING_CHUNK_SIZE):
                            await writer.write(chunk)
                    await writer.commit()
                except BaseException:
                    await writer.abort()
                    raise
        except Exception as error:
            log.warning("staging of %s failed (%s); the cacher will fetch it", spool.digest, error)
            return None
        finally:
            spool.state = SpoolState.VERIFIED
        return key


def for_storage(storage: RegistryStorage, jobs: JobSubmitter) -> HandOver:
    """The strategy for this process's storage backend."""
    objects = storage.objects
    if isinstance(objects, FsObjectStore):
        return RenameStaged(storage, jobs, objects.root / STAGING_PREFIX)
    # One local folder for every worker and restart: names are unique, and stale ones (a
    # process that died mid-download) are swept at start-up.
    return CopyStaged(storage, jobs, Path(tempfile.gettempdir()) / "simple-registry-spool")
