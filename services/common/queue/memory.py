"""In-process queue for the all-in-one `server` mode: same interface, no Redis."""

from __future__ import annotations

import asyncio
import itertools
import logging

from .base import Delivery, JobQueue
from .jobs import CacheJob

log = logging.getLogger(__name__)


class MemoryQueue(JobQueue):
    kind = "memory"
    shared = False

    def __init__(self) -> None:
        self._ready: asyncio.Queue[Delivery] = asyncio.Queue()
        self._pending: dict[str, Delivery] = {}
        self._delayed: set[asyncio.TimerHandle] = set()
        self._ids = itertools.count(1)
        self._locks: set[str] = set()
        self._dead: list[tuple[CacheJob | None, str]] = []

    async def enqueue(self, job: CacheJob) -> None:
        self._ready.put_nowait(Delivery(id=str(next(self._ids)), job=job))

    async def reserve(self, consumer: str, count: int, block_secs: float) -> list[Delivery]:
        deliveries: list[Delivery] = []
        try:
            first = await asyncio.wait_for(self._ready.get(), timeout=block_secs)
        except TimeoutError:
            return deliveries
        deliveries.append(first)
        while len(deliveries) < count and not self._ready.empty():
            deliveries.append(self._ready.get_nowait())
        for delivery in deliveries:
            self._pending[delivery.id] = delivery
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        self._pending.pop(delivery.id, None)

    async def retry(self, delivery: Delivery, job: CacheJob, delay_secs: float) -> None:
        self._pending.pop(delivery.id, None)
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            self._delayed.discard(handle)
            self._ready.put_nowait(Delivery(id=str(next(self._ids)), job=job))

        handle = loop.call_later(delay_secs, requeue)
        self._delayed.add(handle)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._pending.pop(delivery.id, None)
        self._dead.append((delivery.job, reason))

    async def dead_letters(self, count: int = 100) -> list[tuple[CacheJob | None, str]]:
        return self._dead[:count]

    async def depth(self) -> int:
        return self._ready.qsize() + len(self._pending) + len(self._delayed)

    async def try_lock(self, key: str, ttl_secs: float) -> bool:
        if key in self._locks:
            return False
        self._locks.add(key)
        return True

    async def unlock(self, key: str) -> None:
        self._locks.discard(key)

    async def close(self) -> None:
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()
