"""One image as storage holds it: its tags, a tree of its manifests (an index with its
platforms as children, referrers beside their subject), and one manifest in detail.

Everything is read from storage (tag and revision records, manifest and config blobs),
never from a frontend's memory; parsed manifests are kept in a bounded LRU by digest
(content-addressed, so they never change).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...common.errors import ManifestUnknown
from ...common.lru import LruCache
from ...common.manifests import Descriptor, ManifestContents, ManifestUnreadable, parse_manifest
from ...common.oci import Digest, Reference, Tag
from ...common.storage import ManifestRecord, RegistryStorage
from .pulls import RecentPulls

K = TypeVar("K")
V = TypeVar("V")
PARSED_BYTES = 16 * 1024 * 1024
CONFIG_MAX_BYTES = 1024 * 1024
READS_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class TagInfo:
    tag: str
    digest: str
    cached_at: float | None


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    artifact_type: str | None
    annotations: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Node:
    """A manifest in an image's tree; `cached` is False for an index's child that storage
    does not hold (that platform was never pulled)."""

    digest: str
    media_type: str
    size: int | None
    total_size: int | None  # with its config and layers; an index: with its cached children
    tags: tuple[str, ...]
    cached: bool
    cached_at: float | None = None
    last_pulled_at: float | None = None
    platform: str | None = None
    artifact_type: str | None = None
    readable: bool = True
    children: tuple[Node, ...] = ()
    referrers: tuple[Referrer, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageView:
    name: str
    tags: tuple[TagInfo, ...]
    roots: tuple[Node, ...]
    manifest_count: int
    last_pulled_at: float | None


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    os: str | None
    architecture: str | None
    variant: str | None
    created: str | None
    author: str | None
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str | None
    user: str | None
    env_count: int
    labels: Mapping[str, str]
    history: int


@dataclass(frozen=True, slots=True)
class Layer:
    descriptor: Descriptor
    cached: bool


@dataclass(frozen=True, slots=True)
class Parent:
    digest: str
    tags: tuple[str, ...]
    platform: str | None


@dataclass(frozen=True, slots=True)
class ManifestView:
    name: str
    reference: str
    node: Node  # with the platforms of an index as children, and the referrers
    contents: ManifestContents | None
    config: ConfigSummary | None
    layers: tuple[Layer, ...]
    parents: tuple[Parent, ...]
    subject_cached: bool | None  # None: not a referrer
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def layer_bytes(self) -> int:
        return sum(layer.descriptor.size or 0 for layer in self.layers)


@dataclass(frozen=True, slots=True)
class _Revision:
    record: ManifestRecord
    contents: ManifestContents | None  # None: content missing or unreadable
    pulled_at: float | None  # the pull time storage recorded (`update_pull_time`)


class Images:
    """`pull_times`: storage records when each manifest was last pulled (`[global]
    update_pull_time`); without it, "last pulled" is what this process saw."""

    def __init__(self, storage: RegistryStorage, pulls: RecentPulls, pull_times: bool = False):
        self.storage = storage
        self.pulls = pulls
        self.pull_times = pull_times
        self._parsed: LruCache[ManifestContents] = LruCache(PARSED_BYTES)

    # -- reading --------------------------------------------------------------------------

    async def _contents(self, record: ManifestRecord) -> ManifestContents | None:
        parsed = self._parsed.get(record.digest)
        if parsed is not None:
            return parsed
        data = await self.storage.read_blob(Digest.parse(record.digest))
        if data is None:
            return None
        try:
            parsed = parse_manifest(data, record.media_type)
        except ManifestUnreadable:
            return None
        self._parsed.put(record.digest, parsed, weight=len(data))
        return parsed

    async def _revisions(self, name: str) -> dict[str, _Revision]:
        async def read(digest: Digest) -> _Revision | None:
            record = await self.storage.get_revision(name, digest)
            if record is None:
                return None
            pulled_at = None
            if self.pull_times:
                pulled_at = await self.storage.get_pull_time(name, digest)
            return _Revision(record, await self._contents(record), pulled_at)

        found = await _each(await self.storage.list_revisions(name), read)
        return {revision.record.digest: revision for revision in found}

    async def _tags(self, name: str) -> list[TagInfo]:
        async def read(tag: str) -> TagInfo | None:
            record = await self.storage.get_tag(name, tag)
            return TagInfo(tag, record.digest, record.updated_at or None) if record else None

        return await _each(await self.storage.list_tags(name), read)

    # -- an image -------------------------------------------------------------------------

    async def image(self, name: str) -> ImageView:
        revisions, tags = await asyncio.gather(self._revisions(name), self._tags(name))
        tree = _Tree(name, revisions, tags, self.pulls)
        return ImageView(
            name=name,
            tags=tuple(tags),
            roots=tuple(tree.node(digest) for digest in tree.roots()),
            manifest_count=len(revisions),
            last_pulled_at=_latest(
                self.pulls.last_pulled(name), *(r.pulled_at for r in revisions.values())
            ),
        )

    # -- one manifest ---------------------------------------------------------------------

    async def manifest(self, name: str, reference: Reference) -> ManifestView:
        revisions, tags = await asyncio.gather(self._revisions(name), self._tags(name))
        if isinstance(reference, Tag):
            digest = next((t.digest for t in tags if t.tag == reference.value), None)
        else:
            digest = str(reference)
        if digest is None or digest not in revisions:
            raise ManifestUnknown(
                "this manifest is not cached", detail={"name": name, "reference": str(reference)}
            )
        tree = _Tree(name, revisions, tags, self.pulls)
        node = tree.node(digest)
        contents = revisions[digest].contents
        layers: list[Layer] = []
        config = None
        if contents is not None and not contents.is_index:
            infos = await asyncio.gather(
                *(self.storage.blob_info(blob.digest) for blob in contents.layers)
            )
            layers = [
                Layer(blob, info is not None)
                for blob, info in zip(contents.layers, infos, strict=True)
            ]
            if contents.config is not None:
                config = await self._config(contents.config)
        subject_cached = None
        if contents is not None and contents.subject is not None:
            subject_cached = str(contents.subject.digest) in revisions
        return ManifestView(
            name=name,
            reference=str(reference),
            node=node,
            contents=contents,
            config=config,
            layers=tuple(layers),
            parents=tuple(tree.parents(digest)),
            subject_cached=subject_cached,
            annotations=contents.annotations if contents is not None else {},
        )

    async def _config(self, descriptor: Descriptor) -> ConfigSummary | None:
        if descriptor.size is not None and descriptor.size > CONFIG_MAX_BYTES:
            return None
        data = await self.storage.read_blob(descriptor.digest)
        if data is None or len(data) > CONFIG_MAX_BYTES:
            return None
        return summarize_config(data)


class _Tree:
    """The manifests of one image linked up: children of indexes, referrers of subjects."""

    def __init__(
        self,
        name: str,
        revisions: Mapping[str, _Revision],
        tags: list[TagInfo],
        pulls: RecentPulls,
    ):
        self.name = name
        self.revisions = revisions
        self.pulls = pulls
        self.tags: dict[str, list[str]] = {}
        for info in tags:
            self.tags.setdefault(info.digest, []).append(info.tag)
        self.children: set[str] = set()
        self.parent_of: dict[str, list[tuple[str, Descriptor]]] = {}
        self.referrers: dict[str, list[str]] = {}
        for digest, revision in revisions.items():
            contents = revision.contents
            if contents is None:
                continue
            for child in contents.manifests:
                self.children.add(str(child.digest))
                self.parent_of.setdefault(str(child.digest), []).append((digest, child))
            if contents.subject is not None:
                self.referrers.setdefault(str(contents.subject.digest), []).append(digest)

    def roots(self) -> list[str]:
        """Manifests no stored index lists and that refer to no stored subject; tagged
        ones first, then the newest."""

        def is_root(digest: str) -> bool:
            contents = self.revisions[digest].contents
            subject = contents.subject if contents is not None else None
            return digest not in self.children and (
                subject is None or str(subject.digest) not in self.revisions
            )

        found = [digest for digest in self.revisions if is_root(digest)]
        return sorted(
            found,
            key=lambda d: (d not in self.tags, -(self.revisions[d].record.updated_at or 0.0), d),
        )

    def node(self, digest: str, platform: str | None = None, depth: int = 0) -> Node:
        revision = self.revisions[digest]
        contents = revision.contents
        children: list[Node] = []
        if contents is not None and contents.is_index and depth < 3:
            for child in contents.manifests:
                child_platform = str(child.platform) if child.platform is not None else None
                if str(child.digest) in self.revisions:
                    children.append(self.node(str(child.digest), child_platform, depth + 1))
                else:
                    children.append(
                        Node(
                            digest=str(child.digest),
                            media_type=child.media_type,
                            size=child.size,
                            total_size=None,
                            tags=(),
                            cached=False,
                            platform=child_platform,
                            artifact_type=child.artifact_type,
                        )
                    )
        if contents is None:
            total = None
        elif contents.is_index:
            total = revision.record.size + sum(c.total_size or 0 for c in children if c.cached)
        else:
            total = revision.record.size + contents.blob_bytes
        return Node(
            digest=digest,
            media_type=revision.record.media_type,
            size=revision.record.size,
            total_size=total,
            tags=tuple(sorted(self.tags.get(digest, ()))),
            cached=True,
            cached_at=revision.record.updated_at or None,
            last_pulled_at=_latest(
                revision.pulled_at, self.pulls.last_pulled(f"{self.name}@{digest}")
            ),
            platform=platform or _own_platform(self.parent_of.get(digest)),
            artifact_type=contents.artifact_type if contents is not None else None,
            readable=contents is not None,
            children=tuple(children),
            referrers=tuple(self._referrer(d) for d in sorted(self.referrers.get(digest, ()))),
        )

    def _referrer(self, digest: str) -> Referrer:
        revision = self.revisions[digest]
        contents = revision.contents
        artifact_type = None
        annotations: Mapping[str, str] = {}
        if contents is not None:
            artifact_type = contents.artifact_type or (
                contents.config.media_type if contents.config is not None else None
            )
            annotations = contents.annotations
        return Referrer(digest, revision.record.media_type, artifact_type, annotations)

    def parents(self, digest: str) -> list[Parent]:
        return [
            Parent(
                parent,
                tuple(sorted(self.tags.get(parent, ()))),
                str(descriptor.platform) if descriptor.platform is not None else None,
            )
            for parent, descriptor in self.parent_of.get(digest, ())
        ]


async def _each(items: Sequence[K], read: Callable[[K], Awaitable[V | None]]) -> list[V]:
    """`read` of every item, a few at a time, in order; what it found."""
    slots = asyncio.Semaphore(READS_AT_ONCE)

    async def one(item: K) -> V | None:
        async with slots:
            return await read(item)

    return [found for found in await asyncio.gather(*(one(i) for i in items)) if found is not None]


def _latest(*times: float | None) -> float | None:
    return max((t for t in times if t), default=None)


def _own_platform(parents: list[tuple[str, Descriptor]] | None) -> str | None:
    for _parent, descriptor in parents or ():
        if descriptor.platform is not None:
            return str(descriptor.platform)
    return None


def summarize_config(data: bytes) -> ConfigSummary | None:
    """What an image config says about running it; None when it is no image config."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    runtime = document.get("config")
    runtime = runtime if isinstance(runtime, dict) else {}
    labels = runtime.get("Labels")
    env = runtime.get("Env")
    history = document.get("history")
    return ConfigSummary(
        os=_str(document.get("os")),
        architecture=_str(document.get("architecture")),
        variant=_str(document.get("variant")),
        created=_str(document.get("created")),
        author=_str(document.get("author")),
        entrypoint=_strings(runtime.get("Entrypoint")),
        cmd=_strings(runtime.get("Cmd")),
        working_dir=_str(runtime.get("WorkingDir")) or None,
        user=_str(runtime.get("User")) or None,
        env_count=len(env) if isinstance(env, list) else 0,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        history=len(history) if isinstance(history, list) else 0,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    return ()
