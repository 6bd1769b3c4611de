"""Where a blob or manifest is committed: the handler of one cache job.

Idempotent: content already stored is only linked. Ordering: bytes, verified, before any
link (revision, tag, layer) that points at them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from ..common.oci import Digest
from ..common.queue import CacheJob, JobKind, JobQueue, QueueUnavailable
from ..common.routing import Route, Router
from ..common.storage import DigestMismatch, ManifestRecord, RegistryStorage
from ..common.storage.staging import parse_staged_key
from ..common.upstream import UpstreamClient, UpstreamCorrupt, accept_header
from ..common.upstream.pool import UpstreamPool, first_answer
from .checks import CheckedJob, InvalidJob, check_job

log = logging.getLogger(__name__)

# The fetch lock of a digest lives this long unless its holder refreshes it, so the lock of
# a cacher that was killed mid-fetch frees itself quickly.
FETCH_LOCK_SECS = 30.0
FETCH_LOCK_REFRESH_SECS = 10.0


class JobDeferred(Exception):
    """Not a failure: try again shortly (another cacher is fetching the same digest)."""


class PermanentJobError(Exception):
    """Retrying cannot help (the job names a repository that is no longer configured...)."""


class JobHandler:
    def __init__(
        self,
        storage: RegistryStorage,
        upstreams: UpstreamPool,
        router: Router,
        queue: JobQueue,
        max_manifest_size: int,
        max_blob_size: int | None,
    ):
        self.storage = storage
        self.upstreams = upstreams
        self.router = router
        self.queue = queue
        self.max_manifest_size = max_manifest_size
        self.max_blob_size = max_blob_size

    async def handle(self, job: CacheJob) -> str:
        """Persist the job's content; returns the outcome ("stored" or "already-stored")."""
        try:
            checked = check_job(job, self.router, self.max_manifest_size)
        except InvalidJob as error:
            raise PermanentJobError(f"invalid job: {error}") from error
        if job.kind is JobKind.MANIFEST:
            return await self._manifest(checked)
        return await self._blob(checked)

    async def discard_staged(self, job: CacheJob) -> None:
        """The job is given up: remove the bytes it staged (only a real staged key)."""
        if job.staged is None or parse_staged_key(job.staged) is None:
            return
        try:
            await self.storage.objects.delete(job.staged)
        except Exception as error:
            log.warning("could not remove staged %s: %s", job.staged, error)

    def _clients(self, route: Route) -> list[UpstreamClient]:
        return self.upstreams.clients(route.repository.name)

    async def _manifest(self, checked: CheckedJob) -> str:
        job, route, digest = checked.job, checked.route, checked.digest
        outcome = "already-stored"
        media_type = job.media_type
        info = await self.storage.blob_info(digest)
        if info is not None:
            size = info.size
        else:
            data = job.data
            if data is None:
                fetched = await first_answer(
                    self._clients(route),
                    lambda c: c.get_manifest(
                        route.upstream_name(c.settings),
                        str(digest),
                        accept_header(),
                        self.max_manifest_size,
                    ),
                )
                data, media_type = fetched.data, media_type or fetched.media_type
            try:
                await self.storage.put_blob_bytes(digest, data)
            except DigestMismatch as error:
                raise UpstreamCorrupt(route.repository.name, str(error)) from error
            size = len(data)
            outcome = "stored"
        if not media_type:
            raise PermanentJobError("manifest job without a media type")
        # Bytes before links: the revision, then the tag, point at committed content only.
        record = ManifestRecord(
            str(digest), media_type, size, checked.observed_at, confirmed=job.confirmed
        )
        await self.storage.put_revision(route.storage_name, replace(record, confirmed=True))
        if checked.tag is not None:
            await self.storage.put_tag(route.storage_name, checked.tag.value, record)
        return outcome

    async def _blob(self, checked: CheckedJob) -> str:
        job, route, digest = checked.job, checked.route, checked.digest
        outcome = "already-stored"
        info = await self.storage.blob_info(digest)
        if info is None:
            if job.data is not None:
                try:
                    await self.storage.put_blob_bytes(digest, job.data)
                except DigestMismatch as error:
                    raise UpstreamCorrupt(route.repository.name, str(error)) from error
            elif job.staged is not None and await self.storage.commit_staged(job.staged, digest):
                log.info("committed staged blob name=%s digest=%s", route.storage_name, digest)
            else:
                await self._fetch_blob(route, digest)
            info = await self.storage.blob_info(digest)
            if info is None:
                raise RuntimeError(f"blob {digest} not visible after commit")
            outcome = "stored"
        await self.storage.put_layer_link(route.storage_name, digest, info.size)
        return outcome

    async def _fetch_blob(self, route: Route, digest: Digest) -> None:
        lock = f"fetch:{digest}"
        if not await self.queue.try_lock(lock, FETCH_LOCK_SECS):
            raise JobDeferred(f"{digest} is being fetched by another cacher")
        started = time.monotonic()
        keeper = asyncio.create_task(self._keep_lock(lock))
        try:
            download = await first_answer(
                self._clients(route),
                lambda c: c.open_blob(route.upstream_name(c.settings), str(digest)),
            )
            async with download:
                if self.max_blob_size is not None and (download.size or 0) > self.max_blob_size:
                    raise PermanentJobError(f"blob of {download.size} bytes exceeds max_blob_size")
                async with await self.storage.blob_writer(digest, self.max_blob_size) as writer:
                    async for chunk in download.chunks():
                        await writer.write(chunk)
                    try:
                        await writer.commit()
                    except DigestMismatch as error:
                        log.error(
                            "upstream blob digest mismatch name=%s expected=%s actual=%s: not cached",
                            route.storage_name,
                            error.expected,
                            error.actual,
                        )
                        raise UpstreamCorrupt(download_host(route), str(error)) from error
            log.info(
                "cached blob name=%s digest=%s bytes=%d duration_ms=%.1f",
                route.storage_name,
                digest,
                download.bytes_read,
                (time.monotonic() - started) * 1000,
            )
        except ValueError as error:  # the size limit, hit while streaming
            raise PermanentJobError(str(error)) from error
        finally:
            keeper.cancel()
            await self.queue.unlock(lock)

    async def _keep_lock(self, lock: str) -> None:
        while True:
            await asyncio.sleep(FETCH_LOCK_REFRESH_SECS)
            try:
                if not await self.queue.refresh_lock(lock, FETCH_LOCK_SECS):
                    log.warning("lost the fetch lock %s; another cacher may fetch too", lock)
                    return
            except QueueUnavailable:
                pass  # the lock expires by itself; the fetch goes on


def download_host(route: Route) -> str:
    return route.repository.upstreams[0].host if route.repository.upstreams else "-"
