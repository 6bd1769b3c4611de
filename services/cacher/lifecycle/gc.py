"""Garbage collection: which blobs and records may go, given what kept manifests hold.

A blob goes only when no kept manifest references it AND it has been idle for
`blob_grace_secs` by every measure we have:

- its bytes were written (committed) longer ago than the grace;
- no layer link to it was written within the grace (a cacher linked it just now);
- it was released (a prune or DELETE removed its last manifest) longer ago than the grace.

So a client that got a manifest just before it was removed still gets its layers, and a
blob whose manifest is still on its way to the cacher stays. Staged spools and temp files
go only after `max(grace, LEFTOVER_MIN_AGE_SECS)`: a slow download keeps writing its file.

Records whose content is gone (a tag or manifest record, a layer link, a pull time, a
release mark) are orphans; they go once older than the grace as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ...common.oci import Digest
from ...common.storage.keys import released_key
from ...common.storage.objects import ObjectInfo
from .inventory import Contents, Inventory

# A spool or temp file this young may still be written to.
LEFTOVER_MIN_AGE_SECS = 900.0


@dataclass(slots=True)
class Collection:
    """Keys to delete, by step, in the order `deletions.execute` keeps: a link before its
    content, a manifest before its blobs."""

    tags: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)  # manifests with children: first
    manifests: list[str] = field(default_factory=list)
    pulls: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)  # digest -> reason
    marks: list[str] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    _added: set[str] = field(default_factory=set)  # every key above, once

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.tags,
                self.indexes,
                self.manifests,
                self.pulls,
                self.links,
                self.blobs,
                self.marks,
                self.staged,
            )
        )

    def add_tag(self, contents: Contents, tag: str) -> None:
        """A tag's record, then its pull time."""
        self.add(self.tags, contents.tags.get(tag))
        self.add(self.pulls, contents.tag_pulls.get(tag))

    def add_manifest(self, contents: Contents, digest: str, *, index: bool = False) -> None:
        """A manifest's record under one name, then its pull time; an index's record goes
        before its children's."""
        self.add(self.indexes if index else self.manifests, contents.revisions.get(digest))
        self.add(self.pulls, contents.revision_pulls.get(digest))

    def add_blobs(self, inventory: Inventory, blobs: Mapping[str, str]) -> None:
        """Blobs (digest -> reason) with their layer links and release marks."""
        links = inventory.links_of()
        for digest, reason in blobs.items():
            self.blobs[digest] = reason
            for key in links.get(digest, ()):
                self.add_key(self.links, key)
            if digest in inventory.released:
                self.add_key(self.marks, released_key(Digest.parse(digest)))

    def add(self, step: list[str], info: ObjectInfo | None) -> None:
        if info is not None:
            self.add_key(step, info.key)

    def add_key(self, step: list[str], key: str) -> None:
        if key not in self._added:
            self._added.add(key)
            step.append(key)


def idle_blobs(
    inventory: Inventory,
    held: set[str],
    *,
    grace_secs: float,
    now: float,
    released_now: Iterable[str] = (),
) -> list[str]:
    """Stored blobs no kept manifest holds, idle for the grace period."""
    newest_link: dict[str, float] = {}
    for contents in inventory.repositories.values():
        for digest, info in contents.layers.items():
            newest_link[digest] = max(newest_link.get(digest, 0.0), info.modified)
    just_released = set(released_now)
    found = []
    for digest, info in inventory.blobs.items():
        if digest in held:
            continue
        mark = inventory.released.get(digest)
        last_use = max(
            info.modified,
            newest_link.get(digest, 0.0),
            mark.modified if mark is not None else 0.0,
            now if digest in just_released else 0.0,
        )
        if now - last_use >= grace_secs:
            found.append(digest)
    return found


def add_orphans(
    inventory: Inventory,
    tag_digests: Mapping[tuple[str, str], str],
    held: set[str],
    collection: Collection,
    *,
    grace_secs: float,
    now: float,
) -> None:
    """Records whose content is gone or goes now, release marks of blobs that are gone or
    held again, old leftovers.

    `tag_digests`: (name, tag) -> the digest its record names."""

    def old(info: ObjectInfo, age: float = grace_secs) -> bool:
        return now - info.modified >= age

    remaining = set(inventory.blobs) - set(collection.blobs)
    for contents in inventory.repositories.values():
        for tag, info in contents.tags.items():
            digest = tag_digests.get((contents.name, tag))
            if digest is not None and digest not in remaining and old(info):
                collection.add_tag(contents, tag)
        for digest, info in contents.revisions.items():
            if digest not in remaining and old(info):
                collection.add_manifest(contents, digest)
        for digest, info in contents.layers.items():
            if digest not in remaining and old(info):
                collection.add(collection.links, info)
        for tag, info in contents.tag_pulls.items():
            if tag not in contents.tags and old(info):
                collection.add(collection.pulls, info)
        for digest, info in contents.revision_pulls.items():
            if digest not in contents.revisions and old(info):
                collection.add(collection.pulls, info)
    for digest, info in inventory.released.items():
        if digest not in inventory.blobs or digest in held:
            collection.add(collection.marks, info)
    age = max(grace_secs, LEFTOVER_MIN_AGE_SECS)
    for info in inventory.staged:
        if old(info, age):
            collection.add(collection.staged, info)
