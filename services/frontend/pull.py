"""Pull-through logic: where we decide whether to ask the upstream.

Manifest by tag:
  1. immutable (not excluded) and cached: served locally, zero upstream requests;
  2. otherwise a HEAD upstream; the cached digest again: served locally; changed or not
     cached: a GET, verified against its digest, answered, and enqueued for the cacher;
  3. every upstream failing: the cached copy with a `Warning` header; nothing cached: an
     OCI error (429 keeps `Retry-After`).
Manifest by digest: local first, else an upstream GET, verified, enqueued.
Blobs: see `blobs.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..common.errors import (
    BackendUnavailable,
    Denied,
    ManifestUnknown,
    RegistryError,
    SizeInvalid,
    TooManyRequests,
)
from ..common.metrics import Metrics
from ..common.oci import MANIFEST_MEDIA_TYPES, MEDIA_DOCKER_MANIFEST_V1_SIGNED, Digest, Tag
from ..common.queue import CacheJob, JobKind, JobQueue, QueueUnavailable
from ..common.routing import Route
from ..common.runtime import Runtime
from ..common.storage import ManifestRecord
from ..common.storage.objects import StorageUnavailable
from ..common.upstream import (
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
)
from ..common.upstream.client import (
    FetchedManifest,
    ManifestHead,
    ManifestTooLarge,
    UpstreamClient,
    UpstreamCorrupt,
    accept_header,
)
from ..common.upstream.pool import first_answer

log = logging.getLogger("simple_registry.frontend")

STALE_WARNING = '299 - "upstream unreachable; serving a cached copy that may be stale"'


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    digest: str
    media_type: str
    size: int
    data: bytes | None  # None: read it from storage (only needed for GET)
    warning: str | None = None


def upstream_error_to_registry(error: UpstreamError, not_found: RegistryError) -> RegistryError:
    """How an upstream failure looks to a client when nothing cached can answer."""
    if isinstance(error, UpstreamNotFound):
        return not_found
    if isinstance(error, ManifestTooLarge):
        return SizeInvalid("the manifest exceeds the registry's max_manifest_size")
    if isinstance(error, UpstreamRateLimited):
        headers = {}
        if error.retry_after is not None:
            headers["Retry-After"] = str(int(error.retry_after + 0.999))
        return TooManyRequests("upstream rate limit reached", headers=headers)
    if isinstance(error, UpstreamDenied):
        return Denied(
            "the upstream refused access (the repository may not exist or needs credentials)",
            detail={"upstream": error.upstream},
        )
    return BackendUnavailable(
        "upstream unavailable and nothing cached", detail={"upstream": error.upstream}
    )


class ManifestMemory:
    """Manifests in this frontend's memory, by (name, digest), bounded in bytes, and the
    digests of immutable tags. Content-addressed bytes and immutable tags never change, so
    nothing here goes stale; losing it costs a storage read or one upstream request.

    It answers hot manifests without touching storage, and the GET by digest that follows
    Docker's HEAD by tag while the cacher is still storing the manifest."""

    FRESH_SECS = 10.0

    def __init__(self, max_bytes: int = 32 * 1024 * 1024):
        self._items: OrderedDict[tuple[str, str], FetchedManifest] = OrderedDict()
        self._tags: dict[tuple[str, str], str] = {}
        self._fresh: dict[tuple[str, str], tuple[str, float]] = {}
        self._bytes = 0
        self._max_bytes = max_bytes

    def get(self, name: str, digest: str) -> FetchedManifest | None:
        item = self._items.get((name, digest))
        if item is not None:
            self._items.move_to_end((name, digest))
        return item

    def put_immutable_tag(self, name: str, tag: str, digest: str) -> None:
        if len(self._tags) > 100_000:
            self._tags.clear()
        self._tags[(name, tag)] = digest

    def get_immutable_tag(self, name: str, tag: str) -> ManifestAnswer | None:
        digest = self._tags.get((name, tag))
        return self.answer(name, digest) if digest is not None else None

    def put_fresh_tag(self, name: str, tag: str, digest: str) -> None:
        if len(self._fresh) > 10_000:
            self._fresh.clear()
        self._fresh[(name, tag)] = (digest, time.monotonic())

    def get_fresh_tag(self, name: str, tag: str) -> ManifestAnswer | None:
        """A tag the upstream answered less than FRESH_SECS ago, while it is not stored yet."""
        entry = self._fresh.get((name, tag))
        if entry is None or time.monotonic() - entry[1] > self.FRESH_SECS:
            return None
        return self.answer(name, entry[0])

    def answer(self, name: str, digest: str) -> ManifestAnswer | None:
        manifest = self.get(name, digest)
        if manifest is None:
            return None
        return ManifestAnswer(digest, manifest.media_type, len(manifest.data), manifest.data)

    def put(self, name: str, digest: str, manifest: FetchedManifest) -> None:
        key = (name, digest)
        if key in self._items:
            return
        self._items[key] = manifest
        self._bytes += len(manifest.data)
        while self._bytes > self._max_bytes and self._items:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted.data)


class JobSubmitter:
    """Enqueues cache jobs in the background: a slow or down queue never delays a pull.

    While the queue is down caching is degraded: that is logged once, jobs are dropped
    (the content is simply fetched again on a later pull) and one probe per
    `PROBE_INTERVAL_SECS` checks whether the queue is back."""

    PROBE_INTERVAL_SECS = 2.0
    MAX_PENDING = 1000

    def __init__(self, queue: JobQueue, metrics: Metrics):
        self._queue = queue
        self.metrics = metrics
        self.degraded = False
        self._next_probe = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def _skip(self) -> bool:
        """Drop the job now: the queue is down and not due for a probe, or too much waits."""
        if (self.degraded and time.monotonic() < self._next_probe) or len(
            self._pending
        ) >= self.MAX_PENDING:
            self.dropped += 1
            return True
        return False

    async def submit(self, job: CacheJob) -> None:
        if self._skip():
            return
        task = asyncio.create_task(self._enqueue(job))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _enqueue(self, job: CacheJob) -> None:
        try:
            await self._queue.enqueue(job)
        except QueueUnavailable as error:
            self.dropped += 1
            self._next_probe = time.monotonic() + self.PROBE_INTERVAL_SECS
            if not self.degraded:
                self.degraded = True
                self.metrics.caching_degraded.set(1)
                log.warning(
                    "caching degraded: cannot enqueue cache jobs (%s); pulls go on, "
                    "uncached content is fetched from upstream until the queue is back",
                    error,
                )
            return
        if self.degraded:
            self.degraded = False
            self.metrics.caching_degraded.set(0)
            log.info(
                "caching resumed: cache jobs are enqueued again (%d dropped meanwhile)",
                self.dropped,
            )

    async def submit_now(self, job: CacheJob) -> bool:
        """Enqueue and wait for the answer (from background work only); True when queued."""
        if self._skip():
            return False
        await self._enqueue(job)
        return not self.degraded

    def queue_reachable(self) -> None:
        """A health check reached the queue: try the next job at once."""
        self._next_probe = 0.0

    async def flush(self, timeout_secs: float = 5.0) -> None:
        """Wait for enqueues in flight (at shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_secs)


class PullThrough:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.storage = runtime.storage
        self.recent = ManifestMemory()
        self.jobs = JobSubmitter(runtime.queue, runtime.metrics)
        self.max_manifest_size = runtime.settings.global_.max_manifest_size
        self.metrics = runtime.metrics
        # When this frontend last saw the upstream confirm a cached tag (losing it costs a HEAD).
        self._last_checked: dict[tuple[str, str], float] = {}
        self._in_flight: dict[
            tuple[str, str, str], asyncio.Task[tuple[FetchedManifest, Digest]]
        ] = {}

    def _checked_recently(self, route: Route, tag: Tag, cached: ManifestRecord) -> bool:
        interval = route.repository.manifest_check_interval_secs
        if interval <= 0:
            return False
        if time.time() - cached.updated_at < interval:
            return True
        checked = self._last_checked.get((route.storage_name, tag.value))
        return checked is not None and time.monotonic() - checked < interval

    def _count(self, result: str) -> None:
        self.metrics.cache.labels("manifest", result).inc()

    def clients(self, route: Route) -> list[UpstreamClient]:
        return self.runtime.upstreams.clients(route.repository.name)

    # -- manifests --------------------------------------------------------------------------

    async def manifest(
        self, route: Route, reference: Tag | Digest, accept: str | None
    ) -> ManifestAnswer:
        if isinstance(reference, Digest):
            return await self._manifest_by_digest(route, reference, accept)
        return await self._manifest_by_tag(route, reference, accept)

    async def _cached_tag(self, route: Route, tag: Tag) -> ManifestRecord | None:
        try:
            record = await self.storage.get_tag(route.storage_name, tag.value)
            if record is None:
                return None
            # A link is only written after its content, but content can be removed by hand.
            if await self.storage.blob_info(Digest.parse(record.digest)) is None:
                return None
        except StorageUnavailable as error:
            log.warning("storage unavailable, asking the upstream: %s", error)
            return None
        return record

    async def _cached_revision(self, route: Route, digest: Digest) -> ManifestRecord | None:
        try:
            record = await self.storage.get_revision(route.storage_name, digest)
            if record is not None and await self.storage.blob_info(digest) is not None:
                return record
        except StorageUnavailable as error:
            log.warning("storage unavailable, asking the upstream: %s", error)
        return None

    async def _manifest_by_tag(self, route: Route, tag: Tag, accept: str | None) -> ManifestAnswer:
        immutable = route.repository.is_immutable(tag.value)
        if immutable:
            known = self.recent.get_immutable_tag(route.storage_name, tag.value)
            if known is not None and accepts(accept, known.media_type):
                self._count("hit")
                return known
        cached = await self._cached_tag(route, tag)
        if cached is not None and not accepts(accept, cached.media_type):
            # The client cannot take what is cached (e.g. an old client and an OCI index):
            # let the upstream negotiate with the client's own Accept, and keep the tag.
            return await self._negotiated(route, tag, accept or "")
        if cached is None:
            # Fetched moments ago and still on its way to storage: no second upstream GET.
            known = self.recent.get_fresh_tag(route.storage_name, tag.value)
            if known is not None and accepts(accept, known.media_type):
                self._count("hit")
                return known
        if cached is not None and immutable:
            self._count("hit")
            return await self._remembered(route, cached, tag.value)
        if cached is not None and self._checked_recently(route, tag, cached):
            self._count("hit")
            return _local(cached)
        upstream_accept = accept_header(accept)
        try:
            if cached is not None:
                head: ManifestHead = await first_answer(
                    self.clients(route),
                    lambda c: c.head_manifest(
                        route.upstream_name(c.settings), tag.value, upstream_accept
                    ),
                )
                if head.digest == cached.digest:
                    if len(self._last_checked) > 100_000:
                        self._last_checked.clear()
                    self._last_checked[(route.storage_name, tag.value)] = time.monotonic()
                    self._count("revalidated")
                    return _local(cached)
            fetched, digest = await self._fetch_manifest(
                route, tag.value, upstream_accept, None, link_tag=tag.value
            )
        except UpstreamError as error:
            if cached is not None and not isinstance(error, UpstreamNotFound):
                log.warning(
                    "serving stale manifest name=%s tag=%s digest=%s reason=%s",
                    route.storage_name,
                    tag.value,
                    cached.digest,
                    error,
                )
                self._count("stale")
                return _local(cached, warning=STALE_WARNING)
            raise upstream_error_to_registry(
                error, ManifestUnknown("manifest unknown", detail={"tag": tag.value})
            ) from error
        self._count("miss")
        return ManifestAnswer(str(digest), fetched.media_type, len(fetched.data), fetched.data)

    async def _negotiated(self, route: Route, tag: Tag, accept: str) -> ManifestAnswer:
        try:
            # Stored by digest only: the tag keeps naming what the upstream serves by default.
            fetched, digest = await self._fetch_manifest(route, tag.value, accept, None)
        except UpstreamError as error:
            raise upstream_error_to_registry(
                error, ManifestUnknown("manifest unknown", detail={"tag": tag.value})
            ) from error
        self._count("miss")
        return ManifestAnswer(str(digest), fetched.media_type, len(fetched.data), fetched.data)

    async def _manifest_by_digest(
        self, route: Route, digest: Digest, accept: str | None
    ) -> ManifestAnswer:
        known = self.recent.answer(route.storage_name, str(digest))
        if known is not None:
            self._count("hit")
            return known
        record = await self._cached_revision(route, digest)
        if record is not None:
            self._count("hit")
            return await self._remembered(route, record, None)
        try:
            fetched, _ = await self._fetch_manifest(
                route, str(digest), accept_header(accept), digest
            )
        except UpstreamError as error:
            raise upstream_error_to_registry(
                error, ManifestUnknown("manifest unknown", detail={"digest": str(digest)})
            ) from error
        self._count("miss")
        return ManifestAnswer(str(digest), fetched.media_type, len(fetched.data), fetched.data)

    async def _fetch_manifest(
        self,
        route: Route,
        reference: str,
        accept: str,
        expected: Digest | None,
        link_tag: str | None = None,
    ) -> tuple[FetchedManifest, Digest]:
        """Fetch, verify, keep in memory and enqueue a manifest (tagged with `link_tag`)."""

        async def fetch(client: UpstreamClient) -> tuple[FetchedManifest, Digest]:
            fetched = await client.get_manifest(
                route.upstream_name(client.settings), reference, accept, self.max_manifest_size
            )
            digest = _verified_digest(fetched, expected, client.host)
            return fetched, digest

        async def fetch_and_keep() -> tuple[FetchedManifest, Digest]:
            fetched, digest = await first_answer(self.clients(route), fetch)
            # Remembered before the task completes: a request that arrives after it finds
            # the manifest here instead of starting a second upstream fetch.
            self.recent.put(route.storage_name, str(digest), fetched)
            if link_tag is not None:
                self.recent.put_fresh_tag(route.storage_name, link_tag, str(digest))
                if route.repository.is_immutable(link_tag):
                    self.recent.put_immutable_tag(route.storage_name, link_tag, str(digest))
            await self._enqueue_manifest(route, digest, fetched, link_tag)
            return fetched, digest

        # Concurrent misses of one manifest share one upstream request; the fetch runs as
        # its own task so that a client going away does not cancel it for the others.
        key = (route.storage_name, reference, accept)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(fetch_and_keep())
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        else:
            self._count("coalesced")
        return await asyncio.shield(task)

    async def _enqueue_manifest(
        self, route: Route, digest: Digest, fetched: FetchedManifest, tag: str | None
    ) -> None:
        await self.jobs.submit(
            CacheJob(
                kind=JobKind.MANIFEST,
                repository=route.repository.name,
                remote_name=route.remote_name,
                digest=str(digest),
                size=len(fetched.data),
                media_type=fetched.media_type,
                tag=tag,
                data=fetched.data,
            )
        )

    async def _remembered(
        self, route: Route, record: ManifestRecord, immutable_tag: str | None
    ) -> ManifestAnswer:
        """A stored manifest, kept in memory for the next request."""
        answer = _local(record)
        try:
            data = await self.read_manifest_bytes(answer)
        except BackendUnavailable:
            return answer
        fetched = FetchedManifest(data, record.media_type, record.digest)
        self.recent.put(route.storage_name, record.digest, fetched)
        if immutable_tag is not None:
            self.recent.put_immutable_tag(route.storage_name, immutable_tag, record.digest)
        return ManifestAnswer(record.digest, record.media_type, len(data), data)

    async def read_manifest_bytes(self, answer: ManifestAnswer) -> bytes:
        if answer.data is not None:
            return answer.data
        try:
            data = await self.storage.read_blob(Digest.parse(answer.digest))
        except StorageUnavailable:
            data = None
        if data is None:
            raise BackendUnavailable("cached manifest content disappeared; retry the request")
        return data


def accepts(accept: str | None, media_type: str) -> bool:
    """Does an Accept header admit this manifest type? No header admits everything."""
    if not accept:
        return True
    offered = {part.split(";")[0].strip() for part in accept.split(",")}
    return bool(offered & {media_type, "*/*", "application/*", "application/json"}) or not (
        offered & set(MANIFEST_MEDIA_TYPES)
    )


def _local(record: ManifestRecord, warning: str | None = None) -> ManifestAnswer:
    return ManifestAnswer(record.digest, record.media_type, record.size, None, warning)


def _verified_digest(fetched: FetchedManifest, expected: Digest | None, upstream: str) -> Digest:
    """The manifest's digest, checked against what was asked for and what the upstream said."""
    algorithm = expected.algorithm if expected is not None else "sha256"
    actual = Digest.of_bytes(fetched.data, algorithm)
    if expected is not None and actual != expected:
        log.error(
            "upstream manifest digest mismatch upstream=%s expected=%s actual=%s",
            upstream,
            expected,
            actual,
        )
        raise UpstreamCorrupt(
            upstream, f"manifest digest mismatch: expected {expected}, got {actual}"
        )
    header = fetched.digest_header
    # A signed schema 1 manifest's digest is over its payload without the signatures.
    signed_v1 = fetched.media_type == MEDIA_DOCKER_MANIFEST_V1_SIGNED
    if header and header.startswith(f"{algorithm}:") and header != str(actual) and not signed_v1:
        log.error(
            "upstream manifest digest mismatch upstream=%s header=%s actual=%s",
            upstream,
            header,
            actual,
        )
        raise UpstreamCorrupt(upstream, f"manifest digest mismatch: header {header}, got {actual}")
    return actual
