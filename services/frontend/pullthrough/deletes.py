"""Deletes on a mirror repository (Angos's semantics): `DELETE /v2/<name>/manifests/<ref>`.

- by tag: the tag goes (its manifest stays, untagged, for retention to judge);
- by digest: the manifest's record under this name goes, with every tag naming it.

The bytes are not deleted here: the blobs the manifest referenced are released (marked
with the time) and garbage collection deletes them once no manifest holds them and
`blob_grace_secs` have passed. Before anything goes, every frontend is made to forget
(`invalidation.deleting`), so the next pull of it goes upstream, on any frontend. Who may
delete is the access policy's decision (the `delete-manifest` action), made before this.
"""

from __future__ import annotations

import contextlib
import logging
import time

from ...common.errors import ManifestUnknown
from ...common.manifests import ManifestUnreadable, references
from ...common.oci import Digest, Reference, Tag
from ...common.routing import Route
from ...common.storage import RegistryStorage
from ...common.storage.invalidation import deleting

log = logging.getLogger(__name__)

DELETE = "delete"  # the release reason GC counts these bytes under


class DeleteService:
    def __init__(self, storage: RegistryStorage):
        self.storage = storage

    async def delete(self, route: Route, reference: Reference) -> None:
        """Remove the tag or manifest; ManifestUnknown when it is not cached here."""
        name = route.storage_name
        if isinstance(reference, Tag):
            if await self.storage.get_tag(name, reference.value) is None:
                raise ManifestUnknown("manifest unknown", detail={"tag": reference.value})
            async with deleting(self.storage) as hold:
                hold.check()
                await self.storage.delete_tag(name, reference.value)
            log.info("deleted tag name=%s tag=%s", name, reference.value)
            return
        if await self.storage.get_revision(name, reference) is None:
            raise ManifestUnknown("manifest unknown", detail={"digest": str(reference)})
        tags = [
            tag
            for tag in await self.storage.list_tags(name)
            if (record := await self.storage.get_tag(name, tag)) is not None
            and record.digest == str(reference)
        ]
        await self._release(reference)
        async with deleting(self.storage) as hold:
            hold.check()
            for tag in tags:  # links before what they point at
                await self.storage.delete_tag(name, tag)
            hold.check()
            await self.storage.delete_revision(name, reference)
        log.info("deleted manifest name=%s digest=%s tags=%s", name, reference, tags)

    async def _release(self, digest: Digest) -> None:
        """Mark the manifest's bytes and what it references as released now: GC deletes
        those no other manifest holds, after the grace (a mark on a blob still held is
        only a hint, removed by the next scrub)."""
        now = time.time()
        data = await self.storage.read_blob(digest)
        held = [str(digest)]
        if data is not None:
            with contextlib.suppress(ManifestUnreadable):
                held += references(data).all
        for text in held:
            await self.storage.mark_released(Digest.parse(text), DELETE, now)
