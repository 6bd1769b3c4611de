"""In-process queue for the all-in-one `server` mode: same interface, no Redis."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TypeVar

from .base import DeadLetter, Delivery, JobQueue, QueuedJob, fresh_attempt
from .jobs import CacheJob, UnsupportedJobVersion

log = logging.getLogger(__name__)

T = TypeVar("T", DeadLetter, QueuedJob)


class MemoryQueue(JobQueue):
    kind = "memory"
    shared = False

    def __init__(self) -> None:
        self._ready: asyncio.Queue[Delivery] = asyncio.Queue()
        self._pending: dict[str, Delivery] = {}
        self._delayed: set[asyncio.TimerHandle] = set()
        self._ids = itertools.count(1)
        self._locks: set[str] = set()
        self._dead: dict[str, DeadLetter] = {}  # in the order they died
        self._waiting: dict[str, Delivery] = {}  # enqueued, not reserved yet

    async def enqueue(self, job: CacheJob) -> None:
        self._put_ready(Delivery(id=str(next(self._ids)), job=job))

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
            self._waiting.pop(delivery.id, None)
            self._pending[delivery.id] = delivery
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        self._pending.pop(delivery.id, None)

    async def retry(self, delivery: Delivery, job: CacheJob, delay_secs: float) -> None:
        self._pending.pop(delivery.id, None)
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            self._delayed.discard(handle)
            self._put_ready(Delivery(id=str(next(self._ids)), job=job))

        handle = loop.call_later(delay_secs, requeue)
        self._delayed.add(handle)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._pending.pop(delivery.id, None)
        self._dead[delivery.id] = DeadLetter(delivery.id, delivery.job, reason, time.time())

    async def dead_letters(self, count: int = 100) -> list[tuple[CacheJob | None, str]]:
        return [(letter.job, letter.reason) for letter in list(self._dead.values())[:count]]

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

    # -- for operators ------------------------------------------------------------------------

    def _put_ready(self, delivery: Delivery) -> None:
        self._waiting[delivery.id] = delivery
        self._ready.put_nowait(delivery)

    async def dead_letter_page(self, count: int, after: str | None = None) -> list[DeadLetter]:
        return _page(list(self._dead.values()), count, after)

    async def dead_letter_count(self) -> int:
        return len(self._dead)

    async def retry_dead_letter(self, letter_id: str) -> CacheJob | None:
        letter = self._dead.get(letter_id)
        if letter is None:
            return None
        if letter.job is None:
            raise UnsupportedJobVersion(
                f"dead letter {letter_id} cannot be decoded: {letter.reason}"
            )
        job = fresh_attempt(letter.job)
        await self.enqueue(job)
        del self._dead[letter_id]
        return job

    async def queued_page(self, count: int, after: str | None = None) -> list[QueuedJob]:
        # Ids are increasing integers: in progress and waiting, merged in enqueue order.
        deliveries = sorted(
            [*self._pending.values(), *self._waiting.values()], key=lambda d: int(d.id)
        )
        return _page([QueuedJob(d.id, d.job) for d in deliveries], count, after)


def _page(items: list[T], count: int, after: str | None) -> list[T]:
    """The first `count` items whose id (an increasing integer) comes after `after`."""
    if after is not None:
        if not after.isdigit():
            return []
        items = [item for item in items if int(item.id) > int(after)]
    return items[:count]
