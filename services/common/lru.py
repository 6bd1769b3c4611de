"""One bounded, observable cache for state that can be lost: an LRU by weight, with TTLs.

Entries are evicted one at a time from the least recently used end when the total weight
passes the bound, so a full cache keeps its hot entries (a dict emptied when full throws
them all away at once, and every one costs an upstream request to learn again). An entry
with a TTL is gone once it expires. Size and evictions are exported as metrics.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")

# What an entry costs beyond its own payload: key tuple, entry object, dict slot.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    weight: int
    expires_at: float  # monotonic; inf for no TTL


class LruCache(Generic[V]):
    def __init__(
        self,
        max_weight: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[int], None] | None = None,
    ):
        self.max_weight = max_weight
        self.weight = 0
        self.evictions = 0
        self._items: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._clock = clock
        self._on_evict = on_evict

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, value: V, *, weight: int = 0, ttl: float | None = None) -> None:
        total = weight + ENTRY_OVERHEAD_BYTES
        if total > self.max_weight:
            self.pop(key)
            return  # larger than the whole cache: not kept
        if key in self._items:
            self._remove(key)
        expires_at = self._clock() + ttl if ttl is not None else float("inf")
        self._items[key] = _Entry(value, total, expires_at)
        self.weight += total
        evicted = 0
        while self.weight > self.max_weight:
            oldest = next(iter(self._items))
            self._remove(oldest)
            evicted += 1
        if evicted:
            self.evictions += evicted
            if self._on_evict is not None:
                self._on_evict(evicted)

    def pop(self, key: Hashable) -> V | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        self._remove(key)
        return entry.value

    def clear(self) -> None:
        self._items.clear()
        self.weight = 0

    def discard_where(self, predicate: Callable[[Hashable, Any], bool]) -> int:
        """Remove every entry whose (key, value) matches; returns how many."""
        doomed = [key for key, entry in self._items.items() if predicate(key, entry.value)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: Hashable) -> None:
        entry = self._items.pop(key)
        self.weight -= entry.weight
