"""What this frontend remembers between requests: one bounded LRU, safe to lose.

- manifests by (name, digest): content-addressed bytes, answered without a storage read;
- tags by (name, tag): the digest the upstream last confirmed, and when; a tag not stored
  yet (its cache job is on the way) lives only `IN_TRANSIT_SECS`;
- layer links by (name, digest): the blob may be served under that name.

Losing an entry costs one storage read or one upstream request. Everything here is a cache
of storage or of an upstream answer, so `forget_all` (after prune or scrub removed content)
is always safe.

Nothing here answers for deleted content (common/storage/invalidation.py): with a watcher
(`require_lease`), memory answers only while the watcher read the invalidation token
recently (`confirm`), and neither answers nor remembers while content is being deleted
(`suspend`). Lookups then miss and the services read storage instead.
"""

from __future__ import annotations

import time
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
        self._valid_until: float | None = None  # monotonic; None: no watcher, always valid
        self._suspended_until = 0.0

    def _usable(self) -> bool:
        now = time.monotonic()
        if now < self._suspended_until:
            return False
        return self._valid_until is None or now < self._valid_until

    def _get(self, key: tuple[str, str, str]) -> object | None:
        return self._cache.get(key) if self._usable() else None

    def _put(
        self, key: tuple[str, str, str], value: object, weight: int = 0, ttl: float | None = None
    ) -> None:
        if self._usable():
            self._cache.put(key, value, weight=weight, ttl=ttl)
            self._observe()

    def _observe(self) -> None:
        self._metrics.memory_entries.set(len(self._cache))
        self._metrics.memory_bytes.set(self._cache.weight)

    # -- manifests ------------------------------------------------------------------------

    def manifest(self, name: str, digest: str) -> FetchedManifest | None:
        value = self._get(("manifest", name, digest))
        return value if isinstance(value, FetchedManifest) else None

    def keep_manifest(self, name: str, digest: str, manifest: FetchedManifest) -> None:
        self._put(("manifest", name, digest), manifest, weight=len(manifest.data))

    # -- tags -----------------------------------------------------------------------------

    def tag(self, name: str, tag: str) -> TagMemory | None:
        value = self._get(("tag", name, tag))
        return value if isinstance(value, TagMemory) else None

    def keep_tag(self, name: str, tag: str, memory: TagMemory) -> None:
        self._put(("tag", name, tag), memory, ttl=None if memory.stored else IN_TRANSIT_SECS)

    # -- layer links ----------------------------------------------------------------------

    def layer_linked(self, name: str, digest: str) -> bool:
        return self._get(("layer", name, digest)) is not None

    def keep_layer_link(self, name: str, digest: str) -> None:
        self._put(("layer", name, digest), True)

    # -- invalidation ---------------------------------------------------------------------

    def forget_all(self) -> None:
        self._cache.clear()
        self._observe()

    def require_lease(self) -> None:
        """From now on, answer only within the lease a watcher confirms."""
        if self._valid_until is None:
            self._valid_until = 0.0

    def confirm(self, valid_until: float) -> None:
        """The watcher read the token at a time that makes memory valid until then."""
        self._valid_until = valid_until

    def suspend(self, secs: float) -> None:
        """Content is being deleted: forget, and neither answer nor remember for `secs`."""
        self._suspended_until = max(self._suspended_until, time.monotonic() + secs)
        self.forget_all()
