"""How the cache is doing over the last hour and day: this process's counters, sampled.

Every `interval` seconds the sampler reads the Prometheus counters this process already
keeps (`registry_cache_lookups_total`, `registry_bytes_served_total`,
`registry_upstream_requests_total`) into a ring buffer that holds a day. Windows and chart
buckets are differences between samples. The figures are per process: with several
workers or frontends each shows its own share (the page says so); Prometheus has the sum.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from dataclasses import dataclass

from ...common.metrics import Metrics

DAY_SECS = 24 * 3600.0
# Lookup results answered from storage, and those that went to the upstream.
HIT_RESULTS = frozenset({"hit", "revalidated", "stale"})
MISS_RESULTS = frozenset({"miss"})


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # unix seconds
    hits: float
    misses: float
    cache_bytes: float
    upstream_bytes: float
    upstream_requests: float


@dataclass(frozen=True, slots=True)
class Window:
    """Totals over a window that ends now."""

    secs: float  # the window asked for
    covered_secs: float  # how much of it the samples cover (less after a start)
    hits: int
    misses: int
    cache_bytes: int
    upstream_bytes: int
    upstream_requests: int

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    secs: float
    hits: int
    misses: int
    cache_bytes: int
    upstream_bytes: int


def read_counters(metrics: Metrics, at: float) -> Sample:
    hits = misses = cache_bytes = upstream_bytes = upstream_requests = 0.0
    for family in metrics.cache.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                result = sample.labels.get("result", "")
                if result in HIT_RESULTS:
                    hits += sample.value
                elif result in MISS_RESULTS:
                    misses += sample.value
    for family in metrics.bytes_served.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                if sample.labels.get("source") == "cache":
                    cache_bytes += sample.value
                else:
                    upstream_bytes += sample.value
    for family in metrics.upstream_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                upstream_requests += sample.value
    return Sample(at, hits, misses, cache_bytes, upstream_bytes, upstream_requests)


class CounterSampler:
    def __init__(self, metrics: Metrics, interval_secs: float, keep_secs: float = DAY_SECS):
        self.metrics = metrics
        self.interval_secs = interval_secs
        self.started_at = time.time()
        self._samples: deque[Sample] = deque(maxlen=int(keep_secs / interval_secs) + 2)

    def sample(self, now: float | None = None) -> Sample:
        taken = read_counters(self.metrics, time.time() if now is None else now)
        self._samples.append(taken)
        return taken

    async def run(self) -> None:
        """Sample until cancelled (a cleanup_ctx task)."""
        while True:
            self.sample()
            await asyncio.sleep(self.interval_secs)

    def _finder(self) -> _Finder:
        return _Finder(list(self._samples))

    def window(self, secs: float, now: float | None = None) -> Window:
        """Totals of the last `secs`, up to this moment's counters."""
        now = time.time() if now is None else now
        current = read_counters(self.metrics, now)
        start = self._finder().at_or_before(now - secs)
        if start is None:
            start = Sample(self.started_at, 0.0, 0.0, 0.0, 0.0, 0.0)
        return Window(
            secs=secs,
            covered_secs=min(secs, max(0.0, now - start.at)),
            hits=int(current.hits - start.hits),
            misses=int(current.misses - start.misses),
            cache_bytes=int(current.cache_bytes - start.cache_bytes),
            upstream_bytes=int(current.upstream_bytes - start.upstream_bytes),
            upstream_requests=int(current.upstream_requests - start.upstream_requests),
        )

    def series(self, secs: float, buckets: int, now: float | None = None) -> list[Bucket]:
        """`buckets` equal slices of the last `secs`, oldest first; a slice before the
        first sample is empty."""
        now = time.time() if now is None else now
        width = secs / buckets
        current = read_counters(self.metrics, now)
        finder = self._finder()
        first = finder.samples[0] if finder.samples else current
        result: list[Bucket] = []
        for index in range(buckets):
            start = now - secs + index * width
            end = start + width
            if end <= first.at:
                result.append(Bucket(start, width, 0, 0, 0, 0))
                continue
            low = finder.at_or_before(start) or first
            high = current if index == buckets - 1 else (finder.at_or_before(end) or current)
            result.append(
                Bucket(
                    start,
                    width,
                    hits=max(0, int(high.hits - low.hits)),
                    misses=max(0, int(high.misses - low.misses)),
                    cache_bytes=max(0, int(high.cache_bytes - low.cache_bytes)),
                    upstream_bytes=max(0, int(high.upstream_bytes - low.upstream_bytes)),
                )
            )
        return result


class _Finder:
    """Samples by time (they are appended in time order)."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples
        self._times = [sample.at for sample in samples]

    def at_or_before(self, moment: float) -> Sample | None:
        """The newest sample taken at or before `moment`; the oldest one when none is."""
        if not self.samples:
            return None
        index = bisect.bisect_right(self._times, moment) - 1
        return self.samples[max(index, 0)]
