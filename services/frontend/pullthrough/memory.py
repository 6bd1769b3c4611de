"""What this frontend remembers between requests: one bounded LRU, safe to lose.

- manifests by (name, digest): content-addressed bytes, answered without a storage read;
- tags by (name, tag): the digest the upstream last confirmed, and when; a tag not stored
  yet (its cache job is on the way) lives only `IN_TRANSIT_SECS`;
- layer links by (name, digest): the blob may be served under that name.

Losing an entry costs one storage read or one upstream request. Everything here is a cache
of storage or of an upstream answer, so `forget_all` (after prune or scrub removed content)
is always safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...common.lru import LruCache
from ...common.metrics import Metrics
from ...common.upstream import FetchedManifest
from .freshness import IN_TRANSIT_SECS

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TagMemory:
    digest: str
    checked_at: float  # unix time the upstream confirmed the tag
    stored: bool  # False while its cache job is on the way


class PullMemory:
    def __init__(self, metrics: Metrics, max_bytes: int = DEFAULT_MAX_BYTES):
        self._metrics = metrics
        self._cache: LruCache[object] = LruCache(max_bytes, on_evict=metrics.memory_evictions.inc)

    def _observe(self) -> None:
        self._metrics.memory_entries.set(len(self._cache))
        self._metrics.memory_bytes.set(self._cache.weight)

    # -- manifests ------------------------------------------------------------------------

    def manifest(self, name: str, digest: str) -> FetchedManifest | None:
        value = self._cache.get(("manifest", name, digest))
        return value if isinstance(value, FetchedManifest) else None

    def keep_manifest(self, name: str, digest: str, manifest: FetchedManifest) -> None:
        self._cache.put(("manifest", name, digest), manifest, weight=len(manifest.data))
        self._observe()

    # -- tags -----------------------------------------------------------------------------

    def tag(self, name: str, tag: str) -> TagMemory | None:
        value = self._cache.get(("tag", name, tag))
        return value if isinstance(value, TagMemory) else None

    def keep_tag(self, name: str, tag: str, memory: TagMemory) -> None:
        ttl = None if memory.stored else IN_TRANSIT_SECS
        self._cache.put(("tag", name, tag), memory, ttl=ttl)
        self._observe()

    # -- layer links ----------------------------------------------------------------------

    def layer_linked(self, name: str, digest: str) -> bool:
        return self._cache.get(("layer", name, digest)) is not None

    def keep_layer_link(self, name: str, digest: str) -> None:
        self._cache.put(("layer", name, digest), True)
        self._observe()

    # -- invalidation ---------------------------------------------------------------------

    def forget_all(self) -> None:
        self._cache.clear()
        self._observe()
