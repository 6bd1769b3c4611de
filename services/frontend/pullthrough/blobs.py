"""Blobs through the mirror: a stored blob, an upstream HEAD, or a coalesced spool.

A blob is served under a name only once that name's upstream has shown it may have it (a
layer link, or a HEAD answered now), so a private upstream's blob never leaks through
another repository: `freshness.decide` calls such a blob "unconfirmed". A miss is spooled
once (`spool.Fanout`) and handed to the cacher when verified (`handover`).
"""

from __future__ import annotations

import logging
import time

from ...common.errors import BackendUnavailable, SizeInvalid
from ...common.metrics import Metrics
from ...common.oci import Digest
from ...common.queue import CacheJob, JobKind
from ...common.routing import Route
from ...common.storage import BlobInfo, RegistryStorage
from ...common.storage.objects import StorageUnavailable
from ...common.upstream import BlobDownload, UpstreamClient, UpstreamError
from ...common.upstream.pool import UpstreamPool, first_answer
from .answers import (
    BlobAnswer,
    SpooledBlob,
    StoredBlob,
    Subject,
    UpstreamBlobHead,
    UpstreamFailure,
)
from .freshness import CachedView, Freshness, decide
from .handover import HandOver
from .jobs import JobSubmitter
from .memory import PullMemory
from .spool import Fanout, Spool

log = logging.getLogger(__name__)


class BlobService:
    def __init__(
        self,
        storage: RegistryStorage,
        upstreams: UpstreamPool,
        memory: PullMemory,
        jobs: JobSubmitter,
        handover: HandOver,
        metrics: Metrics,
        *,
        max_blob_size: int | None,
        redirect: bool,
    ):
        self.storage = storage
        self.upstreams = upstreams
        self.memory = memory
        self.jobs = jobs
        self.handover = handover
        self.fanout = Fanout(handover.spool_dir)
        self.metrics = metrics
        self.max_blob_size = max_blob_size
        self.redirect = redirect

    def _clients(self, route: Route) -> list[UpstreamClient]:
        return self.upstreams.clients(route.repository.name)

    async def get(
        self, route: Route, digest: Digest, *, head: bool, looked_again: bool = False
    ) -> BlobAnswer:
        try:
            info = await self.storage.blob_info(digest)
        except StorageUnavailable as error:
            log.warning("storage unavailable, streaming %s from the upstream: %s", digest, error)
            info = None
        view = None
        if info is not None:
            linked = await self._linked(route, digest)
            view = CachedView(str(digest), None, 0.0 if linked else None)
        decision = decide(
            view,
            immutable=True,
            check_interval_secs=0.0,
            accept=None,
            upstream_up=self.upstreams.accepting(route.repository.name),
            now=time.time(),
        )
        try:
            match decision.action:
                case Freshness.SERVE_CACHE:
                    assert info is not None
                    return await self._hit(info, head)
                case Freshness.REVALIDATE:
                    assert info is not None
                    await self._confirm(route, info)
                    return await self._hit(info, head)
                case Freshness.FETCH:
                    if not looked_again and self.fanout.committed_since(digest):
                        # The cacher committed it between our storage lookup and now: its
                        # spool is gone and storage answers (no second download).
                        return await self.get(route, digest, head=head, looked_again=True)
                    self.metrics.cache.labels("blob", "miss").inc()
                    if head:
                        return await self._head_upstream(route, digest)
                    return await self._spool(route, digest)
                case _:
                    raise self.upstreams.refusal(route.repository.name)
        except UpstreamError as error:
            raise UpstreamFailure(error, Subject.BLOB, {"digest": str(digest)}) from error

    async def _linked(self, route: Route, digest: Digest) -> bool:
        """Has this name's upstream shown it has the blob? Links are never removed by a
        pull, so one seen here is remembered and a hit costs one stat."""
        if self.memory.layer_linked(route.storage_name, str(digest)):
            return True
        try:
            if await self.storage.has_layer_link(route.storage_name, digest):
                self.memory.keep_layer_link(route.storage_name, str(digest))
                return True
        except StorageUnavailable:
            pass
        return False

    async def _confirm(self, route: Route, info: BlobInfo) -> None:
        """This name's upstream has the stored blob too: link it (no bytes fetched)."""
        await first_answer(
            self._clients(route),
            lambda c: c.head_blob(route.upstream_name(c.settings), str(info.digest)),
        )
        self.memory.keep_layer_link(route.storage_name, str(info.digest))
        await self.jobs.submit(
            CacheJob(
                kind=JobKind.BLOB,
                repository=route.repository.name,
                remote_name=route.remote_name,
                digest=str(info.digest),
                size=info.size,
            )
        )

    async def _hit(self, info: BlobInfo, head: bool) -> StoredBlob:
        self.metrics.cache.labels("blob", "hit").inc()
        path = self.storage.blob_path(info.digest)
        url = None
        if path is None and not head and self.redirect:
            url = await self.storage.blob_url(info.digest)
        digest = info.digest
        return StoredBlob(
            digest,
            info.size,
            path,
            url,
            lambda start, stop: self.storage.read_blob_range(digest, start, stop),
        )

    async def _head_upstream(self, route: Route, digest: Digest) -> UpstreamBlobHead:
        size = await first_answer(
            self._clients(route),
            lambda c: c.head_blob(route.upstream_name(c.settings), str(digest)),
        )
        if size is not None:
            self._check_size(size)
        return UpstreamBlobHead(digest, size)

    def _check_size(self, size: int) -> None:
        if self.max_blob_size is not None and size > self.max_blob_size:
            raise SizeInvalid(
                "blob exceeds the registry's max_blob_size",
                detail={"size": size, "max_blob_size": self.max_blob_size},
            )

    async def _open_upstream(self, route: Route, digest: Digest) -> BlobDownload:
        download = await first_answer(
            self._clients(route),
            lambda c: c.open_blob(route.upstream_name(c.settings), str(digest)),
        )
        if download.size is not None:
            try:
                self._check_size(download.size)
            except SizeInvalid:
                await download.__aexit__(None, None, None)
                raise
        return download

    async def _spool(self, route: Route, digest: Digest) -> SpooledBlob:
        async def hand_over(spool: Spool) -> None:
            await self.handover.hand_over(route, spool)

        try:
            spool, coalesced = await self.fanout.spool_for(
                digest, lambda: self._open_upstream(route, digest), self.max_blob_size, hand_over
            )
        except OSError as error:
            log.error("cannot create a spool file for %s: %s", digest, error)
            raise BackendUnavailable("the registry cannot spool the download") from error
        if coalesced:
            self.metrics.cache.labels("blob", "coalesced").inc()
        return SpooledBlob(spool, coalesced)

    async def close(self) -> None:
        await self.fanout.close()
