"""Blob pulls: hits from storage (sendfile, Range, conditional requests), misses streamed
from the upstream to the client while hashed.

A miss is never buffered whole: chunks go to the client as they arrive, except the last
one, which is held back until the digest is verified. On a mismatch (or an upstream that
stops early) the connection is aborted, so the client sees a failed transfer rather than a
clean finish, and nothing is enqueued for caching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..common.errors import (
    BackendUnavailable,
    BlobUnknown,
    RangeNotSatisfiable,
    RegistryError,
    SizeInvalid,
)
from ..common.oci import BLOB_CONTENT_TYPE, Digest
from ..common.queue import CacheJob, JobKind
from ..common.queue.jobs import INLINE_LIMIT
from ..common.routing import Route
from ..common.runtime import Runtime
from ..common.storage import BlobInfo
from ..common.storage.layout import STAGING_PREFIX
from ..common.storage.objects import StorageUnavailable
from ..common.upstream import (
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
)
from ..common.upstream.client import BlobDownload, UpstreamClient
from ..common.upstream.pool import first_answer
from .fanout import Fanout, Spool
from .pull import JobSubmitter, upstream_error_to_registry

log = logging.getLogger("simple_registry.frontend")

STAGING_CHUNK_SIZE = 1024 * 1024
STAGING_CONCURRENCY = 2
MAX_REMEMBERED_LINKS = 200_000


def blob_headers(digest: Digest) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "Content-Type": BLOB_CONTENT_TYPE,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000, immutable",
    }


class BlobFileResponse(web.FileResponse):
    """`web.FileResponse` (sendfile, Range, If-Modified-Since) whose ETag is the digest:
    content-addressed bytes never change, whatever the file's mtime."""

    def __init__(self, path: Path, digest: Digest, headers: dict[str, str]):
        super().__init__(path, headers=headers)
        self._digest_etag = str(digest)

    @property  # type: ignore[override]
    def etag(self) -> Any:
        return super().etag

    @etag.setter
    def etag(self, value: Any) -> None:
        web.FileResponse.etag.fset(self, self._digest_etag)  # type: ignore[attr-defined]


def etag_matches(request: web.Request, digest: Digest | str) -> bool:
    """Does If-None-Match name this content (by its digest, our ETag)?"""
    if_none_match = request.headers.get("If-None-Match")
    if not if_none_match:
        return False
    candidates = {value.strip().removeprefix("W/").strip('"') for value in if_none_match.split(",")}
    return "*" in candidates or str(digest) in candidates


def requested_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single satisfiable byte range, None without Range."""
    if "Range" not in request.headers:
        return None
    try:
        window = request.http_range
    except ValueError:
        raise RangeNotSatisfiable(
            "only a single byte range is supported",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    start, stop = window.start, window.stop
    if start is None:
        return None
    if start < 0:
        start = max(size + start, 0)
        stop = size
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise RangeNotSatisfiable(
            "range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, stop


class BlobService:
    def __init__(
        self,
        runtime: Runtime,
        jobs: JobSubmitter,
        fanout: Fanout,
        staging_key: Callable[[Path], str] | None,
    ):
        self.fanout = fanout
        self._staging_slots = asyncio.Semaphore(STAGING_CONCURRENCY)
        self._linked: set[tuple[str, str]] = set()
        self.staging_key = staging_key
        self.runtime = runtime
        self.storage = runtime.storage
        self.jobs = jobs
        self.max_blob_size = runtime.settings.global_.max_blob_size
        self.metrics = runtime.metrics

    def clients(self, route: Route) -> list[UpstreamClient]:
        return self.runtime.upstreams.clients(route.repository.name)

    async def serve(self, request: web.Request, route: Route, digest: Digest) -> web.StreamResponse:
        try:
            info = await self.storage.blob_info(digest)
        except StorageUnavailable as error:
            log.warning("storage unavailable, streaming %s from the upstream: %s", digest, error)
            info = None
        if info is not None and await self._may_serve_cached(route, info):
            self.metrics.cache.labels("blob", "hit").inc()
            return await self._serve_cached(request, info)
        self.metrics.cache.labels("blob", "miss").inc()
        if request.method == "HEAD":
            return await self._head_upstream(route, digest)
        return await self._stream_from_upstream(request, route, digest)

    async def _may_serve_cached(self, route: Route, info: BlobInfo) -> bool:
        """A stored blob is served under a name only once that name's upstream has shown it
        may have it (a link), so a private upstream's blob does not leak to another name.
        Links are never removed, so one seen here is remembered: a hit costs one stat."""
        key = (route.storage_name, str(info.digest))
        if key in self._linked:
            return True
        try:
            if await self.storage.has_layer_link(route.storage_name, info.digest):
                self._remember_link(key)
                return True
        except StorageUnavailable:
            pass
        try:
            await first_answer(
                self.clients(route),
                lambda c: c.head_blob(route.upstream_name(c.settings), str(info.digest)),
            )
        except (UpstreamNotFound, UpstreamDenied) as error:
            raise upstream_error_to_registry(
                error, BlobUnknown("blob unknown to registry", detail={"digest": str(info.digest)})
            ) from error
        except UpstreamError:
            return True  # upstream down: a cached blob is always served
        self._remember_link(key)
        await self._enqueue(route, info.digest, info.size, None)
        return True

    def _remember_link(self, key: tuple[str, str]) -> None:
        if len(self._linked) >= MAX_REMEMBERED_LINKS:
            self._linked.clear()
        self._linked.add(key)

    async def _serve_cached(self, request: web.Request, info: BlobInfo) -> web.StreamResponse:
        headers = blob_headers(info.digest)
        if etag_matches(request, info.digest):
            return web.Response(status=304, headers={"ETag": headers["ETag"]})
        window = requested_range(request, info.size)
        if request.method == "GET":
            served = info.size if window is None else window[1] - window[0]
            self.metrics.bytes_served.labels("cache").inc(served)
        path = self.storage.blob_path(info.digest)
        if path is not None:
            return BlobFileResponse(path, info.digest, headers)
        if request.method == "GET" and self.runtime.settings.global_.enable_blob_redirect:
            url = await self.storage.blob_url(info.digest)
            if url is not None:
                raise web.HTTPTemporaryRedirect(
                    url, headers={"Docker-Content-Digest": str(info.digest)}
                )
        start, stop = window if window is not None else (0, info.size)
        response = web.StreamResponse(status=206 if window else 200, headers=headers)
        response.content_length = stop - start
        if window is not None:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
        await response.prepare(request)
        if request.method == "GET":
            async for chunk in self.storage.read_blob_range(info.digest, start, stop):
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _head_upstream(self, route: Route, digest: Digest) -> web.StreamResponse:
        try:
            size = await first_answer(
                self.clients(route),
                lambda c: c.head_blob(route.upstream_name(c.settings), str(digest)),
            )
        except UpstreamError as error:
            raise upstream_error_to_registry(
                error, BlobUnknown("blob unknown to registry", detail={"digest": str(digest)})
            ) from error
        headers = blob_headers(digest)
        if size is not None:
            self._check_size(size)
            headers["Content-Length"] = str(size)
        return web.Response(status=200, headers=headers)

    def _check_size(self, size: int) -> None:
        if self.max_blob_size is not None and size > self.max_blob_size:
            raise SizeInvalid(
                "blob exceeds the registry's max_blob_size",
                detail={"size": size, "max_blob_size": self.max_blob_size},
            )

    async def _open_upstream(self, route: Route, digest: Digest) -> BlobDownload:
        try:
            download = await first_answer(
                self.clients(route),
                lambda c: c.open_blob(route.upstream_name(c.settings), str(digest)),
            )
        except UpstreamError as error:
            raise upstream_error_to_registry(
                error, BlobUnknown("blob unknown to registry", detail={"digest": str(digest)})
            ) from error
        if download.size is not None:
            try:
                self._check_size(download.size)
            except RegistryError:
                await download.__aexit__(None, None, None)
                raise
        return download

    async def _stream_from_upstream(
        self, request: web.Request, route: Route, digest: Digest
    ) -> web.StreamResponse:
        try:
            spool, coalesced = await self.fanout.spool_for(
                digest,
                lambda: self._open_upstream(route, digest),
                self.max_blob_size,
                lambda finished, size: self._spooled(route, finished, size),
            )
        except OSError as error:
            log.error("cannot create a spool file for %s: %s", digest, error)
            raise BackendUnavailable("the registry cannot spool the download") from error
        if coalesced:
            self.metrics.cache.labels("blob", "coalesced").inc()
        response = web.StreamResponse(status=200, headers=blob_headers(digest))
        if spool.size is not None:
            response.content_length = spool.size
        self.metrics.streams_in_flight.inc()
        try:
            ok = await spool.stream_to(request, response)
        finally:
            self.metrics.streams_in_flight.dec()
        if not response.prepared:
            # The spool was already handed to the cacher and committed: a hit now.
            return await self.serve(request, route, digest)
        if ok:
            self.metrics.bytes_served.labels("upstream").inc(spool.written)
        return response

    async def _spooled(self, route: Route, spool: Spool, size: int) -> None:
        """A download finished and verified: hand it to the cacher."""
        staged = None
        data = None
        if size <= INLINE_LIMIT:
            data = await asyncio.to_thread(spool.path.read_bytes)
        elif self.staging_key is not None:
            staged = self.staging_key(spool.path)
        elif self.storage.shared:
            staged = await self._stage_remotely(spool)
        job = CacheJob(
            kind=JobKind.BLOB,
            repository=route.repository.name,
            remote_name=route.remote_name,
            digest=str(spool.digest),
            size=size,
            data=data,
            staged=staged,
        )
        queued = await self.jobs.submit_now(job)
        if queued and staged is not None and self.staging_key is not None:
            spool.handed_over = True
        elif not queued and staged is not None and self.staging_key is None:
            with contextlib.suppress(Exception):
                await self.storage.objects.delete(staged)

    async def _stage_remotely(self, spool: Spool) -> str | None:
        """Copy a verified spool into the shared store's staging area, so that the cacher
        commits it with a server-side copy instead of fetching it from the upstream again
        (upstream bytes are what rate limits count). None when that did not work: the
        cacher then fetches the blob itself."""
        key = f"{STAGING_PREFIX}/{spool.path.name}"
        spool.busy = True
        try:
            # Each upload holds up to one multipart part in memory: a few at a time.
            async with self._staging_slots:
                await self._upload(spool.path, key)
        except Exception as error:
            log.warning("staging of %s failed (%s); the cacher will fetch it", spool.digest, error)
            return None
        finally:
            spool.busy = False
        return key

    async def _upload(self, path: Path, key: str) -> None:
        writer = await self.storage.objects.writer(key)
        try:
            with open(path, "rb") as file:
                while chunk := await asyncio.to_thread(file.read, STAGING_CHUNK_SIZE):
                    await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def _enqueue(
        self, route: Route, digest: Digest, size: int | None, data: bytes | None
    ) -> None:
        await self.jobs.submit(
            CacheJob(
                kind=JobKind.BLOB,
                repository=route.repository.name,
                remote_name=route.remote_name,
                digest=str(digest),
                size=size,
                data=data,
            )
        )
