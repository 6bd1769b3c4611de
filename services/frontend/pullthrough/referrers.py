"""Referrers (OCI 1.1): signatures, SBOMs and attestations that name a manifest as subject.

Asked of the upstream's referrers API; where it has none (404), built from its fallback tag
`sha256-<hex>` (the index that registries without the API keep). A complete answer is
cached as that fallback tag (a cache job like any manifest), so that when the upstream is
down the cached answer is served, with a `Warning`. `artifactType` filters the list, and the
answer says so (`OCI-Filters-Applied`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from ...common.lru import LruCache
from ...common.oci import MEDIA_OCI_INDEX, Digest
from ...common.queue import CacheJob, JobKind
from ...common.routing import Route
from ...common.storage import RegistryStorage
from ...common.storage.objects import StorageUnavailable
from ...common.upstream import UpstreamClient, UpstreamError, UpstreamNotFound
from ...common.upstream.pool import UpstreamPool, first_answer
from .answers import STALE_WARNING, Subject, UpstreamFailure
from .jobs import JobSubmitter

log = logging.getLogger(__name__)

KEPT_MAX_BYTES = 2 * 1024 * 1024
KEPT_SECS = 600.0


@dataclass(frozen=True, slots=True)
class ReferrersAnswer:
    body: bytes
    filtered: bool  # artifactType was applied
    warning: str | None = None


def fallback_tag(digest: Digest) -> str:
    """The referrers tag schema `<alg>-<ref>`, `<ref>` limited to 64 characters (a sha512
    digest's 128 would make a tag longer than the 128 a tag may have)."""
    return f"{digest.algorithm}-{digest.hex[:64]}"


def _descriptors(data: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(data)
    except ValueError:
        return []
    manifests = document.get("manifests") if isinstance(document, dict) else None
    return [entry for entry in manifests or [] if isinstance(entry, dict)]


def index_of(descriptors: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": descriptors},
        separators=(",", ":"),
    ).encode()


class ReferrersService:
    def __init__(
        self,
        storage: RegistryStorage,
        upstreams: UpstreamPool,
        jobs: JobSubmitter,
        max_manifest_size: int,
    ):
        self.storage = storage
        self.upstreams = upstreams
        self.jobs = jobs
        self.max_manifest_size = max_manifest_size
        # Answers already handed to the cacher: the same list is not enqueued per request.
        self._kept: LruCache[bool] = LruCache(KEPT_MAX_BYTES)

    async def get(self, route: Route, digest: Digest, artifact_type: str | None) -> ReferrersAnswer:
        warning = None
        try:
            descriptors, filtered, complete = await first_answer(
                self.upstreams.clients(route.repository.name),
                lambda client: self._ask(client, route, digest, artifact_type),
            )
            if complete:
                await self._keep(route, digest, descriptors)
        except UpstreamError as error:
            cached = await self._cached(route, digest)
            if cached is None:
                raise UpstreamFailure(error, Subject.MANIFEST, {"digest": str(digest)}) from error
            log.warning(
                "serving cached referrers name=%s digest=%s reason=%s",
                route.storage_name,
                digest,
                error,
            )
            descriptors, filtered, warning = cached, False, STALE_WARNING
        if artifact_type is not None and not filtered:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
            filtered = True
        return ReferrersAnswer(index_of(descriptors), filtered, warning)

    async def _ask(
        self, client: UpstreamClient, route: Route, digest: Digest, artifact_type: str | None
    ) -> tuple[list[dict[str, Any]], bool, bool]:
        """(descriptors, filtered upstream, the complete list)."""
        name = route.upstream_name(client.settings)
        try:
            fetched = await client.get_referrers(
                name, str(digest), artifact_type, self.max_manifest_size
            )
        except UpstreamNotFound:
            pass  # no referrers API here: its fallback tag
        else:
            filtered = "artifacttype" in (fetched.filters_applied or "").lower()
            return _descriptors(fetched.data), filtered, not filtered
        try:
            fetched = await client.get_manifest(
                name, fallback_tag(digest), MEDIA_OCI_INDEX, self.max_manifest_size
            )
        except UpstreamNotFound:
            return [], False, True  # nothing refers to it
        return _descriptors(fetched.data), False, True

    async def _keep(self, route: Route, digest: Digest, descriptors: list[dict[str, Any]]) -> None:
        """Cache the complete list as the fallback tag, for when the upstream is down."""
        data = index_of(descriptors)
        content = f"sha256:{hashlib.sha256(data).hexdigest()}"
        key = (route.storage_name, str(digest), content)
        if self._kept.get(key):
            return
        self._kept.put(key, True, ttl=KEPT_SECS)
        await self.jobs.submit(
            CacheJob(
                kind=JobKind.MANIFEST,
                repository=route.repository.name,
                remote_name=route.remote_name,
                digest=content,
                size=len(data),
                media_type=MEDIA_OCI_INDEX,
                tag=fallback_tag(digest),
                data=data,
            )
        )

    async def _cached(self, route: Route, digest: Digest) -> list[dict[str, Any]] | None:
        try:
            record = await self.storage.get_tag(route.storage_name, fallback_tag(digest))
            if record is None:
                return None
            data = await self.storage.read_blob(Digest.parse(record.digest))
        except StorageUnavailable:
            return None
        return _descriptors(data) if data is not None else None
