"""How the cache is doing, gathered for the cache-status page and `/v2/_angos/cache/status`:
upstream health, the job queue and its dead letters, storage used against the budget.

Read-only peeks at state others keep: each upstream's breaker (`UpstreamHealth`), the
ratelimit-remaining gauge its client sets, the queue's depth and dead letters, the usage
figure a cacher measures. A part that cannot be read (the queue is down) says why instead
of failing the page.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ...common.config import Settings
from ...common.metrics import Metrics
from ...common.queue import JobQueue
from ...common.queue.base import DeadLetter
from ...common.storage import RegistryStorage
from ...common.storage.objects import StorageUnavailable
from ...common.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_SECS = 1.0
DEAD_LETTERS_SHOWN = 50


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    repository: str
    url: str
    host: str
    state: str  # closed, open, half-open
    accepting: bool
    refusal: str | None  # why requests are not sent now
    retry_after_secs: float | None  # a rate limit's Retry-After or the breaker's next probe
    rate_limited: bool
    consecutive_failures: int
    last_error: str | None
    last_error_at: float | None
    ratelimit_remaining: int | None  # Docker Hub's ratelimit-remaining, last seen


@dataclass(frozen=True, slots=True)
class QueueStatus:
    kind: str
    depth: int | None
    dead_letter_count: int | None
    dead_letters: tuple[DeadLetter, ...]
    error: str | None  # why depth or dead letters could not be read
    caching_degraded: bool  # this frontend cannot enqueue cache jobs now
    dropped_jobs: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Committed content against `[eviction] max_size`; `used_bytes` is None until a
    cacher has measured it."""

    used_bytes: int | None
    blobs: int | None
    measured_at: float | None
    budget_bytes: int | None
    note: str | None

    @property
    def fraction(self) -> float | None:
        if self.used_bytes is None or not self.budget_bytes:
            return None
        return self.used_bytes / self.budget_bytes


def upstream_statuses(
    settings: Settings, upstreams: UpstreamPool, metrics: Metrics
) -> list[UpstreamStatus]:
    remaining = _ratelimit_remaining(metrics)
    statuses: list[UpstreamStatus] = []
    for repository in settings.repositories.values():
        for client in upstreams.clients(repository.name):
            health = client.health
            refused = health.refusal()
            last_error = health.last_error
            statuses.append(
                UpstreamStatus(
                    repository=repository.name,
                    url=client.settings.url,
                    host=client.host,
                    state=str(health.state),
                    accepting=refused is None,
                    refusal=str(refused) if refused is not None else None,
                    retry_after_secs=refused.retry_after if refused is not None else None,
                    rate_limited=bool(refused is not None and refused.rate_limited),
                    consecutive_failures=health.consecutive_failures,
                    last_error=last_error[0] if last_error else None,
                    last_error_at=last_error[1] if last_error else None,
                    ratelimit_remaining=remaining.get(client.host),
                )
            )
    return statuses


def _ratelimit_remaining(metrics: Metrics) -> dict[str, int]:
    found: dict[str, int] = {}
    for family in metrics.ratelimit_remaining.collect():
        for sample in family.samples:
            host = sample.labels.get("upstream")
            if host:
                found[host] = int(sample.value)
    return found


async def queue_status(
    queue: JobQueue, degraded: bool, dropped: int, shown: int = DEAD_LETTERS_SHOWN
) -> QueueStatus:
    try:
        depth, count, letters = await asyncio.wait_for(
            asyncio.gather(queue.depth(), queue.dead_letter_count(), queue.dead_letter_page(shown)),
            QUEUE_TIMEOUT_SECS,
        )
    except Exception as error:
        return QueueStatus(
            queue.kind, None, None, (), f"{type(error).__name__}: {error}", degraded, dropped
        )
    return QueueStatus(queue.kind, depth, count, tuple(letters), None, degraded, dropped)


async def storage_usage(storage: RegistryStorage, settings: Settings) -> Usage:
    """The usage a cacher last measured, and the budget when one is set."""
    budget = settings.eviction.max_size
    try:
        measured = await storage.get_usage()
    except StorageUnavailable as error:
        return Usage(None, None, None, budget, f"storage unavailable: {error}")
    if measured is None:
        return Usage(None, None, None, budget, "not measured yet (a cacher measures it)")
    return Usage(measured.total_bytes, measured.blobs, measured.measured_at, budget, None)
