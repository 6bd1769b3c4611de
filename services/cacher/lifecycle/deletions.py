"""Carrying out a collection: frontends told to forget first, then one step at a time.

    tags -> index manifests -> manifests -> pull times -> layer links -> blobs -> marks -> staged

A crash (kill -9) between two steps leaves what a later run finishes: a tag never points
at a missing manifest, and a visible manifest never at missing blobs, because records go
before the bytes they point to. Before the blobs go, the repositories are listed once more:
a manifest a cacher stored since the inventory keeps what it references.

Every step starts only while frontends still hold their memory off (`Hold.check`) and, for
a prune or scrub, while this process still holds the lifecycle lock (`check`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ...common.oci import Digest
from ...common.storage import RegistryStorage
from ...common.storage.invalidation import deleting
from ...common.storage.keys import blob_key, parse_repository_key
from .gc import Collection
from .inventory import Inventory, scan_repositories
from .state import ReferenceReader

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    deleted: dict[str, tuple[int, str]] = field(default_factory=dict)  # digest -> size, reason
    spared: list[str] = field(default_factory=list)  # blobs a manifest cached meanwhile holds

    @property
    def bytes(self) -> int:
        return sum(size for size, _ in self.deleted.values())


async def held_since(
    storage: RegistryStorage, inventory: Inventory, reader: ReferenceReader
) -> set[str]:
    """Blobs held by manifests stored after the inventory was taken."""
    repositories, _ = await scan_repositories(storage.objects)
    fresh = {
        digest
        for name, contents in repositories.items()
        for digest in contents.revisions
        if name not in inventory.repositories
        or digest not in inventory.repositories[name].revisions
    }
    held = set(fresh)
    for found in (await reader.read_many(fresh)).values():
        if found is not None:
            held.update(found.all)
    return held


async def execute(
    storage: RegistryStorage,
    inventory: Inventory,
    collection: Collection,
    reader: ReferenceReader,
    check: Callable[[], None] = lambda: None,
) -> Outcome:
    outcome = Outcome()
    if collection.empty:
        return outcome
    async with deleting(storage) as hold:

        async def step(keys: list[str]) -> None:
            hold.check()
            check()
            await storage.delete_keys(keys)

        for keys in (collection.tags, collection.indexes, collection.manifests, collection.pulls):
            await step(keys)
        blobs = dict(collection.blobs)
        if blobs:
            protected = await held_since(storage, inventory, reader)
            outcome.spared = sorted(set(blobs) & protected)
            for digest in outcome.spared:
                log.info("blob %s is referenced by a manifest cached meanwhile: kept", digest)
                del blobs[digest]
        spared = set(outcome.spared)
        await step([key for key in collection.links if _link_digest(key) not in spared])
        await step([blob_key(Digest.parse(digest)) for digest in blobs])
        for digest, reason in blobs.items():
            outcome.deleted[digest] = (inventory.blobs[digest].size, reason)
        await step(collection.marks)
        await step(collection.staged)
    return outcome


def _link_digest(key: str) -> str | None:
    parsed = parse_repository_key(key)
    return str(parsed.digest) if parsed is not None and parsed.digest is not None else None
