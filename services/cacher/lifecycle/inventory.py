"""What storage holds, from listings: every key with its size and modification time.

One scan of `repositories/` (tags, manifest records, layer links, pull times), then of
`blobs/`, `_lifecycle/released/` and `_staging/`. Blobs are listed last: a record seen here
had its content written before it, so it is found by the later blob listing unless it was
deleted meanwhile (and anything written during the scan is younger than the grace period,
which protects it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ...common.storage.keys import (
    BLOBS,
    RELEASED,
    REPOSITORIES,
    KeyKind,
    parse_blob_key,
    parse_released_key,
    parse_repository_key,
)
from ...common.storage.objects import ObjectInfo, ObjectStore
from ...common.storage.staging import STAGING_PREFIX, parse_staged_key


@dataclass(slots=True)
class Contents:
    """One repository name's keys, by tag or digest."""

    name: str
    tags: dict[str, ObjectInfo] = field(default_factory=dict)
    revisions: dict[str, ObjectInfo] = field(default_factory=dict)
    layers: dict[str, ObjectInfo] = field(default_factory=dict)
    tag_pulls: dict[str, ObjectInfo] = field(default_factory=dict)
    revision_pulls: dict[str, ObjectInfo] = field(default_factory=dict)

    def of(self, kind: KeyKind) -> dict[str, ObjectInfo]:
        return {
            KeyKind.TAG: self.tags,
            KeyKind.REVISION: self.revisions,
            KeyKind.LAYER: self.layers,
            KeyKind.TAG_PULL: self.tag_pulls,
            KeyKind.REVISION_PULL: self.revision_pulls,
        }[kind]


@dataclass(slots=True)
class Inventory:
    repositories: dict[str, Contents]
    blobs: dict[str, ObjectInfo]  # digest -> its object
    released: dict[str, ObjectInfo]  # digest -> its release mark
    staged: list[ObjectInfo]
    unknown: list[str]  # keys under repositories/ or blobs/ this layout never writes
    taken_at: float

    @property
    def blob_bytes(self) -> int:
        return sum(info.size for info in self.blobs.values())

    def links_of(self) -> dict[str, list[str]]:
        """blob digest -> the layer-link keys pointing at it, in every repository."""
        links: dict[str, list[str]] = {}
        for contents in self.repositories.values():
            for digest, info in contents.layers.items():
                links.setdefault(digest, []).append(info.key)
        return links


async def scan_repositories(objects: ObjectStore) -> tuple[dict[str, Contents], list[str]]:
    repositories: dict[str, Contents] = {}
    unknown: list[str] = []
    async for info in objects.scan(REPOSITORIES):
        parsed = parse_repository_key(info.key)
        if parsed is None:
            unknown.append(info.key)
            continue
        contents = repositories.get(parsed.name)
        if contents is None:
            contents = repositories[parsed.name] = Contents(parsed.name)
        reference = parsed.tag if parsed.tag is not None else str(parsed.digest)
        contents.of(parsed.kind)[reference] = info
    return repositories, unknown


async def take_inventory(objects: ObjectStore) -> Inventory:
    taken_at = time.time()
    repositories, unknown = await scan_repositories(objects)
    blobs: dict[str, ObjectInfo] = {}
    async for info in objects.scan(BLOBS):
        digest = parse_blob_key(info.key)
        if digest is None:
            unknown.append(info.key)
        else:
            blobs[str(digest)] = info
    released: dict[str, ObjectInfo] = {}
    async for info in objects.scan(RELEASED):
        digest = parse_released_key(info.key)
        if digest is not None:
            released[str(digest)] = info
    # Only what `staged_name` makes: owner locks and per-owner spool folders (fs) are the
    # business of their owners' sweep (storage/owners.py).
    staged = [
        info
        async for info in objects.scan(f"{STAGING_PREFIX}/")
        if parse_staged_key(info.key) is not None
    ]
    return Inventory(repositories, blobs, released, staged, unknown, taken_at)
