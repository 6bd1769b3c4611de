"""Manifests through the mirror: look at what is cached, let `freshness.decide` say whether
to ask the upstream, carry that out.

A fetched manifest is verified against its digest (the one asked for, and the upstream's
`Docker-Content-Digest`), answered with its exact bytes and media type, remembered, and
enqueued for the cacher. Concurrent misses of one manifest share one upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum, auto

from ...common import tracing
from ...common.errors import BackendUnavailable, ManifestUnknown
from ...common.metrics import Metrics
from ...common.oci import MEDIA_DOCKER_MANIFEST_V1_SIGNED, Digest, Reference, Tag
from ...common.queue import CacheJob, JobKind
from ...common.routing import Route
from ...common.storage import ManifestRecord, RegistryStorage
from ...common.storage.objects import StorageUnavailable
from ...common.upstream import (
    FetchedManifest,
    ManifestHead,
    UpstreamClient,
    UpstreamCorrupt,
    UpstreamError,
    UpstreamNotFound,
    accept_header,
)
from ...common.upstream.pool import UpstreamPool, first_answer
from .answers import STALE_WARNING, ManifestAnswer, Subject, UpstreamFailure
from .freshness import IN_TRANSIT_SECS, CachedView, Decision, Freshness, Reason, decide
from .jobs import JobSubmitter
from .memory import PullMemory, TagMemory
from .negotiate import Negotiated, default_platform_child, negotiate, not_acceptable_message

log = logging.getLogger(__name__)


class ManifestVanished(BackendUnavailable):
    """The stored manifest was deleted (a prune) between its lookup and its read."""


class Source(Enum):
    MEMORY = auto()  # bytes in this frontend's memory
    STORED = auto()  # a record in storage
    IN_TRANSIT = auto()  # fetched moments ago, its cache job on the way


@dataclass(frozen=True, slots=True)
class _Cached:
    view: CachedView
    source: Source
    record: ManifestRecord | None = None  # for STORED
    # For MEMORY and IN_TRANSIT: held here, since memory may forget it meanwhile.
    manifest: FetchedManifest | None = None
    # False: stored for a tag without the upstream's digest header to check it against;
    # it is re-checked before it counts as immutable.
    confirmed: bool = True


class ManifestService:
    def __init__(
        self,
        storage: RegistryStorage,
        upstreams: UpstreamPool,
        memory: PullMemory,
        jobs: JobSubmitter,
        metrics: Metrics,
        max_manifest_size: int,
    ):
        self.storage = storage
        self.upstreams = upstreams
        self.memory = memory
        self.jobs = jobs
        self.metrics = metrics
        self.max_manifest_size = max_manifest_size
        self._in_flight: dict[
            tuple[str, str, str], asyncio.Task[tuple[FetchedManifest, Digest]]
        ] = {}

    @property
    def fetches_in_flight(self) -> int:
        """Upstream manifest fetches running now (each shared by its waiting clients)."""
        return len(self._in_flight)

    def _count(self, result: str) -> None:
        self.metrics.cache.labels("manifest", result).inc()
        tracing.annotate("registry.cache", result)

    def _clients(self, route: Route) -> list[UpstreamClient]:
        return self.upstreams.clients(route.repository.name)

    async def get(self, route: Route, reference: Reference, accept: str | None) -> ManifestAnswer:
        """The manifest as this client may take it (`negotiate`), cold or warm alike."""
        answer = await self._canonical(route, reference, accept)
        match negotiate(answer.media_type, accept):
            case Negotiated.SERVE:
                return answer
            case Negotiated.NOT_FOUND:
                raise ManifestUnknown(
                    not_acceptable_message(answer.media_type), detail={"reference": str(reference)}
                )
            case Negotiated.DEFAULT_PLATFORM:
                child = default_platform_child(await self.read_bytes(answer))
                if child is None:
                    raise ManifestUnknown(
                        "manifest list found, but no linux/amd64 manifest in it for a client "
                        "that does not accept lists",
                        detail={"reference": str(reference)},
                    )
                return await self.get(route, Digest.parse(child), accept)
        # Only the upstream can convert it for this client (schema 2 to schema 1).
        try:
            fetched, digest = await self._fetch(route, str(reference), accept or "", None, None)
        except UpstreamError as error:
            raise UpstreamFailure(error, Subject.MANIFEST, {"reference": str(reference)}) from error
        return ManifestAnswer(str(digest), fetched.media_type, len(fetched.data), fetched.data)

    async def _canonical(
        self, route: Route, reference: Reference, accept: str | None
    ) -> ManifestAnswer:
        """The manifest as cached (or as the upstream serves it to a client that takes
        every manifest type), from `decide`."""
        if isinstance(reference, Digest):
            cached = await self._cached_digest(route, reference)
            detail = {"digest": str(reference)}
            immutable, interval = True, 0.0
        else:
            immutable = route.repository.is_immutable(reference.value)
            cached = await self._cached_tag(route, reference, immutable)
            if cached is not None and not cached.confirmed:
                immutable = False  # asked once more before immutability pins it
            detail = {"tag": reference.value}
            interval = route.repository.manifest_check_interval_secs
            if cached is not None and cached.source is Source.IN_TRANSIT:
                interval = max(interval, IN_TRANSIT_SECS)
        view = cached.view if cached is not None else None
        decision = decide(
            view,
            immutable=immutable,
            check_interval_secs=interval,
            accept=accept,
            upstream_up=self.upstreams.accepting(route.repository.name),
            now=time.time(),
        )
        try:
            if decision.action is Freshness.FAIL:
                raise self.upstreams.refusal(route.repository.name)
            return await self._carry_out(decision, route, reference, accept, cached)
        except UpstreamError as error:
            fallback = None
            if not isinstance(error, UpstreamNotFound):
                fallback = decide(
                    view,
                    immutable=immutable,
                    check_interval_secs=interval,
                    accept=accept,
                    upstream_up=False,
                    now=time.time(),
                )
            if cached is None or fallback is None or fallback.action is not Freshness.SERVE_STALE:
                raise UpstreamFailure(error, Subject.MANIFEST, detail) from error
            return self._stale(route, reference, cached, error)

    async def _carry_out(
        self,
        decision: Decision,
        route: Route,
        reference: Reference,
        accept: str | None,
        cached: _Cached | None,
    ) -> ManifestAnswer:
        match decision.action:
            case Freshness.SERVE_CACHE:
                assert cached is not None
                self._count("hit")
                return await self._from_cache(route, reference, cached, decision)
            case Freshness.SERVE_STALE:
                assert cached is not None
                return self._stale(route, reference, cached, None)
            case Freshness.REVALIDATE:
                assert cached is not None and isinstance(reference, Tag)
                answer = await self._revalidate(route, reference, accept, cached)
                if answer is not None:
                    return answer
        link_tag = reference.value if isinstance(reference, Tag) else None
        if decision.reason is Reason.NOT_ACCEPTABLE:
            # The client cannot take what is cached (an old client and an OCI index): the
            # upstream negotiates with the client's own Accept; stored by digest only, so
            # the tag keeps naming what the upstream serves by default.
            upstream_accept, link_tag = accept or "", None
        else:
            upstream_accept = accept_header(accept)
        expected = reference if isinstance(reference, Digest) else None
        unconfirmed = cached.view.digest if cached is not None and not cached.confirmed else None
        fetched, digest = await self._fetch(
            route, str(reference), upstream_accept, expected, link_tag, unconfirmed
        )
        self._count("miss")
        return ManifestAnswer(str(digest), fetched.media_type, len(fetched.data), fetched.data)

    # -- what is cached -------------------------------------------------------------------

    async def _cached_tag(self, route: Route, tag: Tag, immutable: bool) -> _Cached | None:
        name = route.storage_name
        remembered = self.memory.tag(name, tag.value)
        if immutable and remembered is not None:
            manifest = self.memory.manifest(name, remembered.digest)
            if manifest is not None:
                view = _view(remembered.digest, manifest, remembered)
                return _Cached(view, Source.MEMORY, manifest=manifest)
        record = await self._stored(self.storage.get_tag(name, tag.value))
        if record is not None:
            checked_at = record.updated_at
            if remembered is not None and remembered.digest == record.digest:
                checked_at = max(checked_at, remembered.checked_at)
            view = CachedView(record.digest, record.media_type, checked_at)
            return _Cached(view, Source.STORED, record, confirmed=record.confirmed)
        # Read again after the storage lookup: a fetch that finished meanwhile is found here
        # instead of starting a second upstream request.
        remembered = self.memory.tag(name, tag.value)
        if remembered is not None:
            manifest = self.memory.manifest(name, remembered.digest)
            if manifest is not None:
                view = _view(remembered.digest, manifest, remembered)
                return _Cached(view, Source.IN_TRANSIT, manifest=manifest)
        return None

    async def _cached_digest(self, route: Route, digest: Digest) -> _Cached | None:
        manifest = self.memory.manifest(route.storage_name, str(digest))
        if manifest is not None:
            view = CachedView(str(digest), manifest.media_type, 0.0)
            return _Cached(view, Source.MEMORY, manifest=manifest)
        record = await self._stored(self.storage.get_revision(route.storage_name, digest))
        if record is not None:
            view = CachedView(record.digest, record.media_type, 0.0)
            return _Cached(view, Source.STORED, record)
        manifest = self.memory.manifest(route.storage_name, str(digest))  # fetched meanwhile
        if manifest is not None:
            view = CachedView(str(digest), manifest.media_type, 0.0)
            return _Cached(view, Source.MEMORY, manifest=manifest)
        return None

    async def _stored(self, lookup: Awaitable[ManifestRecord | None]) -> ManifestRecord | None:
        """A record whose content is still there; storage trouble reads as nothing cached."""
        try:
            record = await lookup
            # A link is only written after its content, but content can be removed by hand.
            if record is None or await self.storage.blob_info(Digest.parse(record.digest)) is None:
                return None
        except StorageUnavailable as error:
            log.warning("storage unavailable, asking the upstream: %s", error)
            return None
        return record

    # -- answers --------------------------------------------------------------------------

    async def _from_cache(
        self, route: Route, reference: Reference, cached: _Cached, decision: Decision
    ) -> ManifestAnswer:
        if cached.record is None:
            manifest = cached.manifest
            assert manifest is not None
            return _memory_answer(cached.view.digest, manifest)
        if decision.reason is Reason.IMMUTABLE:
            tag = reference.value if isinstance(reference, Tag) else None
            return await self._remembered(route, cached.record, tag)
        return _record_answer(cached.record)

    def _stale(
        self, route: Route, reference: Reference, cached: _Cached, error: UpstreamError | None
    ) -> ManifestAnswer:
        log.warning(
            "serving stale manifest name=%s reference=%s digest=%s reason=%s",
            route.storage_name,
            reference,
            cached.view.digest,
            error if error is not None else "upstream not accepting requests",
        )
        self._count("stale")
        if cached.record is not None:
            return _record_answer(cached.record, warning=STALE_WARNING)
        manifest = cached.manifest
        assert manifest is not None
        answer = _memory_answer(cached.view.digest, manifest)
        return ManifestAnswer(
            answer.digest, answer.media_type, answer.size, answer.data, STALE_WARNING
        )

    async def _revalidate(
        self, route: Route, tag: Tag, accept: str | None, cached: _Cached
    ) -> ManifestAnswer | None:
        """A HEAD upstream: the cached digest again answers from cache, else None."""
        upstream_accept = accept_header(accept)
        head: ManifestHead = await first_answer(
            self._clients(route),
            lambda c: c.head_manifest(route.upstream_name(c.settings), tag.value, upstream_accept),
        )
        if head.digest != cached.view.digest:
            return None
        if not cached.confirmed and cached.record is not None:
            # The upstream's header names the stored digest now: record the tag confirmed.
            record = cached.record
            await self.jobs.submit(
                CacheJob(
                    kind=JobKind.MANIFEST,
                    repository=route.repository.name,
                    remote_name=route.remote_name,
                    digest=record.digest,
                    size=record.size,
                    media_type=record.media_type,
                    tag=tag.value,
                )
            )
        self.memory.keep_tag(
            route.storage_name,
            tag.value,
            TagMemory(cached.view.digest, time.time(), stored=cached.source is Source.STORED),
        )
        self._count("revalidated")
        if cached.record is not None:
            return _record_answer(cached.record)
        manifest = cached.manifest
        assert manifest is not None
        return _memory_answer(cached.view.digest, manifest)

    async def _remembered(
        self, route: Route, record: ManifestRecord, immutable_tag: str | None
    ) -> ManifestAnswer:
        """A stored manifest, kept in memory for the next request."""
        try:
            data = await self.read_bytes(_record_answer(record))
        except BackendUnavailable:
            return _record_answer(record)
        fetched = FetchedManifest(data, record.media_type, record.digest)
        self.memory.keep_manifest(route.storage_name, record.digest, fetched)
        if immutable_tag is not None:
            self.memory.keep_tag(
                route.storage_name,
                immutable_tag,
                TagMemory(record.digest, record.updated_at, stored=True),
            )
        return ManifestAnswer(record.digest, record.media_type, len(data), data)

    async def read_bytes(self, answer: ManifestAnswer) -> bytes:
        if answer.data is not None:
            return answer.data
        try:
            data = await self.storage.read_blob(Digest.parse(answer.digest))
        except StorageUnavailable as error:
            raise BackendUnavailable(
                "cached manifest content disappeared; retry the request"
            ) from error
        if data is None:
            raise ManifestVanished("cached manifest content disappeared; retry the request")
        return data

    # -- fetching -------------------------------------------------------------------------

    async def _fetch(
        self,
        route: Route,
        reference: str,
        accept: str,
        expected: Digest | None,
        link_tag: str | None,
        unconfirmed: str | None = None,
    ) -> tuple[FetchedManifest, Digest]:
        """Fetch, verify, remember and enqueue a manifest (tagged with `link_tag`).

        A tag's manifest is confirmed when the upstream's digest header names it, or when
        it is the `unconfirmed` digest stored before (two fetches agree); an unconfirmed one
        is not remembered for the tag, so the next pull asks the upstream again."""

        async def fetch(client: UpstreamClient) -> tuple[FetchedManifest, Digest]:
            name = route.upstream_name(client.settings)
            fetched = await client.get_manifest(name, reference, accept, self.max_manifest_size)
            try:
                return fetched, verified_digest(fetched, expected, client.host)
            except UpstreamCorrupt as error:
                client.note_failure(error, "GET", name, reference)
                raise

        async def fetch_and_keep() -> tuple[FetchedManifest, Digest]:
            fetched, digest = await first_answer(self._clients(route), fetch)
            # Remembered before the task completes: a request that arrives after it finds
            # the manifest here instead of starting a second upstream fetch.
            self.memory.keep_manifest(route.storage_name, str(digest), fetched)
            confirmed = fetched.digest_header == str(digest) or str(digest) == unconfirmed
            if link_tag is not None:
                if confirmed:
                    self.memory.keep_tag(
                        route.storage_name, link_tag, TagMemory(str(digest), time.time(), False)
                    )
                self.jobs.note_recent_tag(route.storage_name, link_tag)
            await self._enqueue(route, digest, fetched, link_tag, confirmed)
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

    async def _enqueue(
        self,
        route: Route,
        digest: Digest,
        fetched: FetchedManifest,
        tag: str | None,
        confirmed: bool = True,
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
                confirmed=confirmed,
            )
        )


def _view(digest: str, manifest: FetchedManifest, remembered: TagMemory) -> CachedView:
    return CachedView(digest, manifest.media_type, remembered.checked_at)


def _memory_answer(digest: str, manifest: FetchedManifest) -> ManifestAnswer:
    return ManifestAnswer(digest, manifest.media_type, len(manifest.data), manifest.data)


def _record_answer(record: ManifestRecord, warning: str | None = None) -> ManifestAnswer:
    return ManifestAnswer(record.digest, record.media_type, record.size, None, warning)


def verified_digest(fetched: FetchedManifest, expected: Digest | None, upstream: str) -> Digest:
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
