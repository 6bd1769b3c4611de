"""The registry's storage layout, the same for every object store.

    blobs/<alg>/<2 hex>/<hex>                              content (manifests are blobs too)
    repositories/<name>/_manifests/tags/<tag>              JSON ManifestRecord of the tag
    repositories/<name>/_manifests/revisions/<alg>/<hex>   JSON ManifestRecord
    repositories/<name>/_layers/<alg>/<hex>                JSON {"size": n}: blob pulled via <name>

(every key, and the lifecycle's records beside them, in keys.py)

Ordering (crash safety): bytes before links. A link is written only after the content it
points to has been verified and committed, so a link never points at missing or partial
content. Names, tags and digests reaching this module are validated types.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

from .. import tracing
from ..batches import in_batches
from ..oci import Digest, Tag
from .keys import (
    INVALIDATION_KEY,
    REPOSITORIES,
    USAGE_KEY,
    KeyKind,
    blob_key,
    parse_repository_key,
    released_key,
    repository_key,
    repository_of,
    repository_prefix,
    tags_prefix,
)
from .objects import DigestMismatch, ObjectStore, ObjectWriter, StorageUnavailable
from .records import Invalidation, PullTime, Released, StorageUsage, parse_record
from .staging import parse_staged_key

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    updated_at: float = 0.0
    # False: fetched for a tag without a digest header from the upstream; such a tag is
    # re-checked before it counts as immutable (records written before this field: True).
    confirmed: bool = True

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ManifestRecord:
        raw = json.loads(data)
        return cls(
            digest=str(raw["digest"]),
            media_type=str(raw["media_type"]),
            size=int(raw["size"]),
            updated_at=float(raw.get("updated_at", 0.0)),
            confirmed=raw.get("confirmed", True) is not False,
        )


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


_THREAD_HASH_MIN = 128 * 1024


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()


class VerifyingWriter:
    """Streams into an object writer while hashing; publishes only content whose digest
    matches, and aborts (publishing nothing) otherwise."""

    def __init__(self, writer: ObjectWriter, expected: Digest, max_size: int | None = None):
        self._writer = writer
        self._expected = expected
        self._hasher = expected.hasher()
        self.size = 0
        self._max_size = max_size
        self._done = False

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._max_size is not None and self.size > self._max_size:
            raise ValueError(f"blob larger than the limit of {self._max_size} bytes")
        if len(chunk) >= _THREAD_HASH_MIN:
            # hashlib releases the GIL on large buffers: keep the event loop free.
            await asyncio.to_thread(self._hasher.update, chunk)
        else:
            self._hasher.update(chunk)
        await self._writer.write(chunk)

    async def commit(self) -> None:
        actual = f"{self._expected.algorithm}:{self._hasher.hexdigest()}"
        if actual != str(self._expected):
            await self.abort()
            raise DigestMismatch(str(self._expected), actual, self.size)
        # Done only once published: a commit that fails (a full disk) is aborted too, so
        # its temp file goes.
        await self._writer.commit()
        self._done = True

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._writer.abort()

    async def __aenter__(self) -> VerifyingWriter:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Anything that leaves the block without a commit discards the bytes.
        await self.abort()


def _operation_name(operation: Awaitable[object]) -> str:
    code = getattr(operation, "cr_code", None)
    return str(getattr(code, "co_qualname", "lookup"))


class RegistryStorage:
    # After a backend failure, lookups fail at once for this long instead of each waiting
    # for the backend's own timeouts and retries: pulls fall back to the upstream quickly.
    UNAVAILABLE_COOLDOWN_SECS = 5.0

    def __init__(self, objects: ObjectStore):
        self.objects = objects
        self._unavailable_until = 0.0

    async def _lookup(self, operation: Awaitable[T]) -> T:
        if time.monotonic() < self._unavailable_until:
            if isinstance(operation, Coroutine):
                operation.close()
            raise StorageUnavailable("storage failed moments ago; not retried yet")
        try:
            if tracing.enabled():
                with tracing.span("storage", {"storage.operation": _operation_name(operation)}):
                    return await operation
            return await operation
        except StorageUnavailable:
            self._unavailable_until = time.monotonic() + self.UNAVAILABLE_COOLDOWN_SECS
            raise

    @property
    def shared(self) -> bool:
        return self.objects.shared

    # -- blobs ------------------------------------------------------------------------------

    async def blob_info(self, digest: Digest) -> BlobInfo | None:
        stat = await self._lookup(self.objects.stat(blob_key(digest)))
        return BlobInfo(digest, stat.size) if stat is not None else None

    async def read_blob(self, digest: Digest) -> bytes | None:
        return await self._lookup(self.objects.get(blob_key(digest)))

    def blob_path(self, digest: Digest) -> Path | None:
        return self.objects.local_path(blob_key(digest))

    async def stored_blob_hex(self, digest: Digest) -> str | None:
        """What the stored blob's bytes hash to (in its digest's algorithm); None when gone."""
        return await self._hex_of(blob_key(digest), digest)

    async def _hex_of(self, key: str, digest: Digest) -> str | None:
        local = self.objects.local_path(key)
        try:
            if local is not None:
                # In a thread: hashlib releases the GIL, and a file is hashed without copies.
                return await asyncio.to_thread(_file_digest, local, digest.algorithm)
            hasher = digest.hasher()
            async for chunk in self.objects.read(key):
                hasher.update(chunk)
            return hasher.hexdigest()
        except FileNotFoundError:
            return None

    def read_blob_range(self, digest: Digest, start: int, end: int) -> AsyncIterator[bytes]:
        return self.objects.read(blob_key(digest), start, end)

    async def blob_url(self, digest: Digest) -> str | None:
        return await self.objects.presigned_url(blob_key(digest))

    async def blob_writer(self, digest: Digest, max_size: int | None = None) -> VerifyingWriter:
        return VerifyingWriter(await self.objects.writer(blob_key(digest)), digest, max_size)

    async def put_blob_bytes(self, digest: Digest, data: bytes) -> None:
        """Store small content (a manifest) after checking its digest."""
        async with await self.blob_writer(digest) as writer:
            await writer.write(data)
            await writer.commit()

    async def commit_staged(self, staged_key: str, digest: Digest) -> bool:
        """Verify bytes a frontend staged and publish them as the blob; False (and the
        staged object removed) when they are missing, incomplete or wrong."""
        if parse_staged_key(staged_key) != digest:
            return False
        if await self.objects.stat(staged_key) is None:
            return False
        if await self._hex_of(staged_key, digest) != digest.hex:
            await self.objects.delete(staged_key)
            return False
        await self.objects.promote(staged_key, blob_key(digest))
        return True

    # -- manifests and tags -----------------------------------------------------------------

    async def get_tag(self, name: str, tag: str) -> ManifestRecord | None:
        data = await self._lookup(self.objects.get(repository_key(KeyKind.TAG, name, Tag(tag))))
        return ManifestRecord.from_json(data) if data is not None else None

    async def put_tag(self, name: str, tag: str, record: ManifestRecord) -> bool:
        """Point the tag at `record` unless a newer observation (by `updated_at`, the time
        the frontend saw the upstream's answer) is already stored. True when written."""
        current = await self.get_tag(name, tag)
        if current is not None and current.updated_at > record.updated_at:
            return False
        if record.updated_at == 0.0:
            record = replace(record, updated_at=time.time())
        await self.objects.put(repository_key(KeyKind.TAG, name, Tag(tag)), record.to_json())
        return True

    async def get_revision(self, name: str, digest: Digest) -> ManifestRecord | None:
        key = repository_key(KeyKind.REVISION, name, digest)
        data = await self._lookup(self.objects.get(key))
        return ManifestRecord.from_json(data) if data is not None else None

    async def put_revision(self, name: str, record: ManifestRecord) -> None:
        key = repository_key(KeyKind.REVISION, name, Digest.parse(record.digest))
        await self.objects.put(key, record.to_json())

    async def has_layer_link(self, name: str, digest: Digest) -> bool:
        key = repository_key(KeyKind.LAYER, name, digest)
        return await self._lookup(self.objects.stat(key)) is not None

    async def put_layer_link(self, name: str, digest: Digest, size: int) -> None:
        key = repository_key(KeyKind.LAYER, name, digest)
        await self.objects.put(key, json.dumps({"size": size}).encode())

    # -- the lifecycle: deletes, pull times, release marks, usage, invalidation -----------
    # Order (crash safety) is the caller's: a link before its content, a manifest before
    # its blobs, and frontends told to forget (invalidation) before anything goes.

    async def delete_keys(self, keys: list[str]) -> None:
        """Delete these keys (all of one step: the order within is not kept)."""
        if keys:
            await self.objects.delete_many(keys)

    async def delete_tag(self, name: str, tag: str) -> None:
        """The tag, then its pull time."""
        await self.objects.delete(repository_key(KeyKind.TAG, name, Tag(tag)))
        await self.objects.delete(repository_key(KeyKind.TAG_PULL, name, Tag(tag)))

    async def delete_revision(self, name: str, digest: Digest) -> None:
        """The manifest's record under `name`, then its pull time (its bytes go with GC)."""
        await self.objects.delete(repository_key(KeyKind.REVISION, name, digest))
        await self.objects.delete(repository_key(KeyKind.REVISION_PULL, name, digest))

    async def put_pull_time(self, name: str, reference: Tag | Digest, when: float) -> None:
        kind = KeyKind.TAG_PULL if isinstance(reference, Tag) else KeyKind.REVISION_PULL
        await self.objects.put(repository_key(kind, name, reference), PullTime(when).to_json())

    async def get_pull_time(self, name: str, reference: Tag | Digest) -> float | None:
        kind = KeyKind.TAG_PULL if isinstance(reference, Tag) else KeyKind.REVISION_PULL
        record = parse_record(
            PullTime, await self.objects.get(repository_key(kind, name, reference))
        )
        return record.pulled_at if record is not None else None

    async def mark_released(self, digest: Digest, reason: str, when: float) -> None:
        """No manifest needs the blob since `when`: GC may delete it once the grace passed."""
        await self.objects.put(released_key(digest), Released(when, reason).to_json())

    async def get_released(self, digest: Digest) -> Released | None:
        return parse_record(Released, await self.objects.get(released_key(digest)))

    async def get_usage(self) -> StorageUsage | None:
        """Bytes and objects of committed content as a cacher last measured them (None
        before the first measurement); one small read, for status pages."""
        return parse_record(StorageUsage, await self._lookup(self.objects.get(USAGE_KEY)))

    async def put_usage(self, usage: StorageUsage) -> None:
        await self.objects.put(USAGE_KEY, usage.to_json())

    async def get_invalidation(self) -> Invalidation | None:
        return parse_record(Invalidation, await self.objects.get(INVALIDATION_KEY))

    async def put_invalidation(self, invalidation: Invalidation) -> None:
        await self.objects.put(INVALIDATION_KEY, invalidation.to_json())

    async def list_tags(self, name: str) -> list[str]:
        prefix = tags_prefix(name)
        return sorted([key[len(prefix) :] async for key in self.objects.list(prefix)])

    async def list_repositories(self) -> list[str]:
        names = {repository_of(key) async for key in self.objects.list(REPOSITORIES)}
        return sorted(name for name in names if name is not None)

    async def repositories_after(self, after: str | None = None) -> AsyncIterator[str]:
        """Names with manifests in storage, in path order (segment by segment, as a sorted
        folder walk meets them), after `after`. A store with folders (`folders`) is read
        folder by folder and only as far as the caller iterates, skipping whole subtrees
        that sort before `after`: a catalog page costs about what it shows."""
        bound = _path_order(after) if after else None
        folders: Folders | None = getattr(self.objects, "folders", None)
        if folders is None:
            for name in sorted(await self.list_repositories(), key=_path_order):
                if bound is None or _path_order(name) > bound:
                    yield name
            return
        async for name in _names_below(folders, (), bound):
            yield name

    # -- read-only listings for the web UI -------------------------------------------------

    async def list_names(self) -> list[StoredName]:
        """Every repository name in storage with its counts of tags, revisions and layer
        links, from one listing (no object is read); sorted by name. The keys are counted
        in a thread: with 10,000 images they are 50,000 and more."""
        keys = [key async for key in self.objects.list(REPOSITORIES)]
        return await asyncio.to_thread(_count_names, keys)

    async def _linked_digests(self, kind: KeyKind, name: str) -> list[tuple[str, Digest]]:
        found: list[tuple[str, Digest]] = []
        async for key in self.objects.list(f"{repository_prefix(name)}{kind.value}/"):
            parsed = parse_repository_key(key)
            if parsed is not None and parsed.kind is kind and parsed.digest is not None:
                found.append((key, parsed.digest))
        return found

    async def list_revisions(self, name: str) -> list[Digest]:
        """The digests of the manifests stored under `name`."""
        found = await self._linked_digests(KeyKind.REVISION, name)
        return sorted((digest for _key, digest in found), key=str)

    async def layer_links(self, name: str) -> dict[str, int]:
        """The blobs pulled through `name`, with the sizes their links recorded."""
        found = await self._linked_digests(KeyKind.LAYER, name)
        contents = await in_batches(
            [key for key, _ in found], self.objects.get, _LINK_READS_AT_ONCE
        )
        links: dict[str, int] = {}
        for key, digest in found:
            try:
                links[str(digest)] = int(json.loads(contents[key] or b"{}")["size"])
            except (ValueError, KeyError, TypeError):
                continue
        return links


Folders = Callable[[str], Awaitable[list[str]]]


def _path_order(name: str) -> tuple[str, ...]:
    return tuple(name.split("/"))


async def _names_below(
    folders: Folders, name: tuple[str, ...], bound: tuple[str, ...] | None
) -> AsyncIterator[str]:
    children = await folders("/".join(("repositories", *name)))
    if name and "_manifests" in children and (bound is None or name > bound):
        yield "/".join(name)
    for child in children:
        if child.startswith("_"):
            continue  # _manifests, _layers: no name segment starts with "_"
        full = (*name, child)
        # Everything below `full` sorts after it and before its next sibling: all of it is
        # at or before the bound when the bound is past `full` and not inside it.
        if bound is not None and bound > full and bound[: len(full)] != full:
            continue
        async for found in _names_below(folders, full, bound):
            yield found


@dataclass(slots=True)
class StoredName:
    """A repository name in storage and how many objects of each kind it links."""

    name: str
    tags: int = 0
    revisions: int = 0
    layers: int = 0


_COUNTED = {KeyKind.TAG: "tags", KeyKind.REVISION: "revisions", KeyKind.LAYER: "layers"}


def _count_names(keys: list[str]) -> list[StoredName]:
    names: dict[str, StoredName] = {}
    for key in keys:
        parsed = parse_repository_key(key)
        if parsed is None or parsed.kind not in _COUNTED:
            continue
        entry = names.get(parsed.name)
        if entry is None:
            entry = names[parsed.name] = StoredName(parsed.name)
        field = _COUNTED[parsed.kind]
        setattr(entry, field, getattr(entry, field) + 1)
    return [names[name] for name in sorted(names)]


_LINK_READS_AT_ONCE = 32
