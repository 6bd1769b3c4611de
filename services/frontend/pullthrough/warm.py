"""Warming: fetch a tag with all its platforms (or the ones asked for) into the cache before
anyone pulls it — from the web UI, or `simple-registry warm` off-peak.

The same services a pull uses, so a warm costs the upstream what one pull costs and no
more: the tag through `ManifestService` (revalidated, fetched and enqueued like a pull),
each platform's manifest of an index, then every blob through `BlobService`. A blob miss is
a spool; waiting for the spool to finish is enough, because a verified spool is handed to
the cacher by itself. `missing_from_storage` tells when the cacher has committed it all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ...common.manifests import ManifestContents, Platform, parse_manifest
from ...common.oci import Digest, Reference, Tag
from ...common.routing import Route
from ...common.storage import RegistryStorage
from .answers import SpooledBlob
from .blobs import BlobService
from .manifests import ManifestService

log = logging.getLogger(__name__)

# Blobs fetched at once by one warm (each is one upstream download).
BLOBS_AT_ONCE = 4
# An index of indexes is followed this deep, no deeper.
MAX_DEPTH = 3


class WarmFailed(Exception):
    """A blob of the image could not be fetched (the upstream's bytes were wrong, or the
    download broke); what was fetched before stays cached."""


@dataclass(frozen=True, slots=True)
class WarmedManifest:
    digest: str
    media_type: str
    platform: str | None  # as its index names it


@dataclass(frozen=True, slots=True)
class WarmReport:
    name: str  # the storage name
    tag: str
    digest: str  # what the tag points at
    manifests: tuple[WarmedManifest, ...]  # the tag's manifest first
    blobs: tuple[str, ...]
    blobs_cached: int  # already in storage
    blobs_fetched: int  # downloaded now (the cacher commits them)
    bytes_fetched: int
    skipped_platforms: tuple[str, ...]  # children of an index not asked for


async def warm(
    manifests: ManifestService,
    blobs: BlobService,
    route: Route,
    tag: Tag,
    platforms: Sequence[Platform] = (),
) -> WarmReport:
    """Fetch `tag` of `route` and, for an index, its children (those of `platforms` only,
    when given), then every blob they name. Raises `UpstreamFailure` when the upstream
    does not have them and nothing is cached, `WarmFailed` when a blob download fails."""
    warmed: list[WarmedManifest] = []
    skipped: list[str] = []
    blob_digests: dict[Digest, None] = {}
    top = await _manifest(manifests, route, tag)
    warmed.append(WarmedManifest(top[0], top[1].media_type, None))
    pending = [(top[1], 0)]
    while pending:
        contents, depth = pending.pop(0)
        for blob in contents.blobs:
            blob_digests.setdefault(blob.digest, None)
        if depth >= MAX_DEPTH:
            continue
        for child in contents.manifests:
            if platforms and not (
                child.platform is not None and any(child.platform.matches(p) for p in platforms)
            ):
                skipped.append(str(child.platform or child.digest))
                continue
            digest, child_contents = await _manifest(manifests, route, child.digest)
            platform = str(child.platform) if child.platform is not None else None
            warmed.append(WarmedManifest(digest, child_contents.media_type, platform))
            pending.append((child_contents, depth + 1))
    slots = asyncio.Semaphore(BLOBS_AT_ONCE)
    fetched = await asyncio.gather(*(_blob(blobs, route, d, slots) for d in blob_digests))
    report = WarmReport(
        name=route.storage_name,
        tag=tag.value,
        digest=top[0],
        manifests=tuple(warmed),
        blobs=tuple(str(d) for d in blob_digests),
        blobs_cached=sum(1 for size in fetched if size is None),
        blobs_fetched=sum(1 for size in fetched if size is not None),
        bytes_fetched=sum(size or 0 for size in fetched),
        skipped_platforms=tuple(skipped),
    )
    log.info(
        "warmed name=%s tag=%s digest=%s manifests=%d blobs_fetched=%d blobs_cached=%d "
        "bytes_fetched=%d",
        report.name,
        report.tag,
        report.digest,
        len(report.manifests),
        report.blobs_fetched,
        report.blobs_cached,
        report.bytes_fetched,
    )
    return report


async def _manifest(
    manifests: ManifestService, route: Route, reference: Reference
) -> tuple[str, ManifestContents]:
    answer = await manifests.get(route, reference, None)
    data = await manifests.read_bytes(answer)
    return answer.digest, parse_manifest(data, answer.media_type)


async def _blob(
    blobs: BlobService, route: Route, digest: Digest, slots: asyncio.Semaphore
) -> int | None:
    """The bytes downloaded, or None when the blob was already stored."""
    async with slots:
        answer = await blobs.get(route, digest, head=False)
        if not isinstance(answer, SpooledBlob):
            return None
        spool = answer.spool
        while not spool.done:
            await spool.wait_for_progress()
        if not spool.verified:
            raise WarmFailed(f"the download of {digest} failed; nothing of it was cached")
        return spool.written


async def missing_from_storage(storage: RegistryStorage, report: WarmReport) -> list[str]:
    """What of a warm the cacher has not committed yet: the tag, manifests, blobs."""
    missing: list[str] = []
    record = await storage.get_tag(report.name, report.tag)
    if record is None or record.digest != report.digest:
        missing.append(f"tag {report.tag}")
    for manifest in report.manifests:
        digest = Digest.parse(manifest.digest)
        if await storage.get_revision(report.name, digest) is None:
            missing.append(f"manifest {manifest.digest}")
    for blob in report.blobs:
        digest = Digest.parse(blob)
        if not await storage.has_layer_link(report.name, digest):
            missing.append(f"blob {blob}")
    return missing
