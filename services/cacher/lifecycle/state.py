"""The records behind an inventory: what each tag points at, when things were cached and
pulled, and what each manifest references.

Reads run a bounded number at a time. Manifests are content-addressed, so what one
references never changes: `ReferenceReader` remembers it for the life of the process, and a
cacher's later runs read only manifests cached since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from ...common.batches import in_batches
from ...common.manifests import ManifestUnreadable, References, references
from ...common.oci import Digest
from ...common.storage import ManifestRecord, RegistryStorage
from ...common.storage.objects import ObjectInfo
from ...common.storage.records import PullTime, parse_record
from .inventory import Inventory

log = logging.getLogger(__name__)

REQUESTS_AT_ONCE = 32  # storage reads or writes in flight at once (in_batches)
MAX_REMEMBERED_MANIFESTS = 500_000
RECORD_SETTLED_SECS = 5.0

R = TypeVar("R", ManifestRecord, PullTime)


class ReferenceReader:
    """What a manifest (by digest) references; None when its bytes cannot be read as a
    manifest (the caller then keeps every blob). And the small records (tags, pull times),
    read again only when a listing shows them rewritten: a cacher's later runs cost a listing
    plus what changed."""

    def __init__(self, storage: RegistryStorage):
        self.storage = storage
        self._known: dict[str, References | None] = {}
        self._records: dict[str, tuple[float, int, object]] = {}  # key -> modified, size, record

    async def read(self, digest: str) -> References | None:
        if digest in self._known:
            return self._known[digest]
        data = await self.storage.read_blob(Digest.parse(digest))
        if data is None:
            return None  # gone meanwhile: nothing to remember
        try:
            found: References | None = references(data)
        except ManifestUnreadable as error:
            log.warning("manifest %s cannot be read (%s): no blob goes this run", digest, error)
            found = None
        if len(self._known) >= MAX_REMEMBERED_MANIFESTS:
            self._known.clear()
        self._known[digest] = found
        return found

    async def read_many(self, digests: Iterable[str]) -> dict[str, References | None]:
        return await in_batches(set(digests), self.read, REQUESTS_AT_ONCE)

    async def records(self, infos: Iterable[ObjectInfo], kind: type[R]) -> dict[str, R]:
        """The records of these objects that parse, by key."""
        wanted = {info.key: info for info in infos}

        async def read(key: str) -> R | None:
            info = wanted[key]
            cached = self._records.get(key)
            if cached is not None and cached[:2] == (info.modified, info.size):
                return cached[2] if isinstance(cached[2], kind) else None
            record = parse_record(kind, await self.storage.objects.get(key))
            # S3 times have whole seconds: a record rewritten within the second it was read
            # would look unchanged, so only records older than that are remembered.
            if time.time() - info.modified > RECORD_SETTLED_SECS:
                if len(self._records) >= MAX_REMEMBERED_MANIFESTS:
                    self._records.clear()
                self._records[key] = (info.modified, info.size, record)
            return record

        found = await in_batches(wanted, read, REQUESTS_AT_ONCE)
        return {key: record for key, record in found.items() if record is not None}


@dataclass(frozen=True, slots=True)
class TagState:
    tag: str
    digest: str
    pushed_at: float  # when this content was cached under the tag (a mirror's "push")
    pulled_at: float  # 0: never pulled (or not recorded)


@dataclass(frozen=True, slots=True)
class ManifestState:
    digest: str
    pushed_at: float
    pulled_at: float
    references: References | None  # None: unreadable, or its bytes are missing
    stored: bool  # its bytes are in storage


@dataclass(slots=True)
class RepositoryState:
    name: str
    tags: dict[str, TagState] = field(default_factory=dict)
    manifests: dict[str, ManifestState] = field(default_factory=dict)


@dataclass(slots=True)
class Survey:
    """An inventory with its records read: the lifecycle's view of storage at one time."""

    inventory: Inventory
    states: dict[str, RepositoryState]
    references: dict[str, References | None]  # by manifest digest (stored ones)

    @property
    def unreadable(self) -> list[str]:
        """Stored manifests whose references are unknown: no blob may go while they are."""
        return sorted(
            manifest.digest
            for state in self.states.values()
            for manifest in state.manifests.values()
            if manifest.stored and manifest.references is None
        )

    @property
    def tag_digests(self) -> dict[tuple[str, str], str]:
        return {
            (name, tag.tag): tag.digest
            for name, state in self.states.items()
            for tag in state.tags.values()
        }


async def survey(
    inventory: Inventory,
    reader: ReferenceReader,
    *,
    pull_times: bool,
) -> Survey:
    """Every repository's tags and manifests with their times and references."""
    repositories = inventory.repositories.values()
    tags = await reader.records((i for c in repositories for i in c.tags.values()), ManifestRecord)
    pulls: dict[str, PullTime] = {}
    if pull_times:
        infos = (
            i for c in repositories for i in (*c.tag_pulls.values(), *c.revision_pulls.values())
        )
        pulls = await reader.records(infos, PullTime)

    def pulled(info: ObjectInfo | None) -> float:
        record = pulls.get(info.key) if info is not None else None
        return record.pulled_at if record is not None else 0.0

    manifests = {d for contents in repositories for d in contents.revisions}
    manifests |= {record.digest for record in tags.values()}
    known = await reader.read_many(d for d in manifests if d in inventory.blobs)
    states: dict[str, RepositoryState] = {}
    for name, contents in inventory.repositories.items():
        state = states[name] = RepositoryState(name)
        for digest, info in contents.revisions.items():
            state.manifests[digest] = ManifestState(
                digest,
                pushed_at=info.modified,
                pulled_at=pulled(contents.revision_pulls.get(digest)),
                references=known.get(digest),
                stored=digest in inventory.blobs,
            )
        for tag, info in contents.tags.items():
            record = tags.get(info.key)
            if record is None:
                continue  # gone meanwhile, or unreadable: housekeeping's business
            state.tags[tag] = TagState(
                tag,
                record.digest,
                pushed_at=record.updated_at or info.modified,
                pulled_at=pulled(contents.tag_pulls.get(tag)),
            )
    return Survey(inventory, states, known)
