"""The frontend's one bounded memory: an LRU by weight, with TTLs and an eviction count."""

from __future__ import annotations

from simple_registry.common.lru import ENTRY_OVERHEAD_BYTES, LruCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_entry_goes_first_one_at_a_time() -> None:
    evicted: list[int] = []
    cache: LruCache[str] = LruCache(3 * ENTRY_OVERHEAD_BYTES, on_evict=evicted.append)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("d", "D")
    assert cache.get("b") is None
    assert [cache.get(key) for key in "acd"] == ["A", "C", "D"]
    assert evicted == [1] and cache.evictions == 1
    assert cache.weight == 3 * ENTRY_OVERHEAD_BYTES


def test_weight_counts_the_payload_and_a_heavy_entry_pushes_out_several() -> None:
    cache: LruCache[bytes] = LruCache(9 * ENTRY_OVERHEAD_BYTES)
    for index in range(5):
        cache.put(index, b"x")
    # Five entries weighing 1 and one weighing 7 (its payload and the overhead) are 12 > 9:
    # the three oldest go.
    cache.put("big", b"y" * 1000, weight=6 * ENTRY_OVERHEAD_BYTES)
    assert [cache.get(index) for index in range(5)] == [None, None, None, b"x", b"x"]
    assert cache.get("big") is not None
    assert cache.evictions == 3 and cache.weight == 9 * ENTRY_OVERHEAD_BYTES


def test_an_entry_larger_than_the_whole_cache_is_not_kept_and_evicts_nothing() -> None:
    cache: LruCache[str] = LruCache(2 * ENTRY_OVERHEAD_BYTES)
    cache.put("small", "s")
    cache.put("huge", "h", weight=10 * ENTRY_OVERHEAD_BYTES)
    assert cache.get("huge") is None and cache.get("small") == "s"
    assert cache.evictions == 0


def test_an_entry_with_a_ttl_expires_and_one_without_stays() -> None:
    clock = FakeClock()
    cache: LruCache[str] = LruCache(10 * ENTRY_OVERHEAD_BYTES, clock=clock)
    cache.put("short", "s", ttl=10)
    cache.put("long", "l")
    clock.now = 9.9
    assert cache.get("short") == "s"
    clock.now = 10.0
    assert cache.get("short") is None
    assert cache.get("long") == "l"
    assert len(cache) == 1 and cache.weight == ENTRY_OVERHEAD_BYTES


def test_replacing_an_entry_keeps_the_weight_right() -> None:
    cache: LruCache[str] = LruCache(10 * ENTRY_OVERHEAD_BYTES)
    cache.put("k", "one", weight=100)
    cache.put("k", "two", weight=50)
    assert cache.get("k") == "two"
    assert cache.weight == 50 + ENTRY_OVERHEAD_BYTES


def test_clear_and_discard_where_forget_entries() -> None:
    cache: LruCache[str] = LruCache(10 * ENTRY_OVERHEAD_BYTES)
    for key in (("tag", "a"), ("tag", "b"), ("manifest", "a")):
        cache.put(key, "v")
    assert cache.discard_where(lambda key, _value: key[0] == "tag") == 2  # type: ignore[index]
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0 and cache.weight == 0
