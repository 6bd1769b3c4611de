"""One prune or scrub at a time: a lock with a heartbeat.

With `[queue.redis]` the lock is a Redis key (SET NX PX, refreshed only by its holder:
queue/redis.py); every cacher and every `prune`/`scrub` command takes it. Without Redis
(one `server` process and an operator's command) it is a lease object in storage,
`_lifecycle/lock` — written, then read back to see who won.

The holder refreshes it every `REFRESH_SECS`; a holder that dies (kill -9) leaves a lock
that expires after `TTL_SECS`, and the next cacher to try takes over. A holder that could
not refresh for too long stops before its next delete (`Guard.check`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

from ...common.background import running
from ...common.queue import JobQueue, QueueUnavailable
from ...common.storage import RegistryStorage
from ...common.storage.keys import LOCK_KEY

log = logging.getLogger(__name__)

LOCK_NAME = "lifecycle"
TTL_SECS = 15.0
REFRESH_SECS = 5.0
# A storage lease is read back after this long to see whether another writer won.
LEASE_SETTLE_SECS = 0.5


class LockBusy(Exception):
    """Another process holds the lifecycle lock."""


class LockLost(Exception):
    """This process could not keep the lock: it stops before deleting more."""


class Guard:
    def __init__(self) -> None:
        self.refreshed_at = time.monotonic()

    def check(self) -> None:
        if time.monotonic() - self.refreshed_at > TTL_SECS - REFRESH_SECS:
            raise LockLost("the lifecycle lock could not be refreshed; stopping")


class LifecycleLock(abc.ABC):
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @abc.abstractmethod
    async def take(self) -> bool: ...

    @abc.abstractmethod
    async def refresh(self) -> bool: ...

    @abc.abstractmethod
    async def release(self) -> None: ...

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Guard]:
        """Hold the lock for the block; LockBusy when another process has it."""
        if not await self.take():
            raise LockBusy("another process is pruning or scrubbing")
        guard = Guard()
        try:
            async with running(self._beat(guard)):
                yield guard
        finally:
            await self.release()

    async def _beat(self, guard: Guard) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECS)
            started = time.monotonic()
            try:
                kept = await self.refresh()
            except Exception as error:
                log.warning("lifecycle lock refresh failed: %s", error)
                continue
            if not kept:
                log.error("lifecycle lock lost to another process")
                return
            guard.refreshed_at = started


class QueueLock(LifecycleLock):
    """The Redis lock of the shared queue."""

    def __init__(self, queue: JobQueue):
        self.queue = queue

    async def take(self) -> bool:
        return await self.queue.try_lock(LOCK_NAME, TTL_SECS)

    async def refresh(self) -> bool:
        return await self.queue.refresh_lock(LOCK_NAME, TTL_SECS)

    async def release(self) -> None:
        with contextlib.suppress(QueueUnavailable):
            await self.queue.unlock(LOCK_NAME)


class StorageLease(LifecycleLock):
    """A lease object in storage, for deployments without Redis."""

    def __init__(self, storage: RegistryStorage):
        self.storage = storage

    async def _current(self) -> tuple[str, float] | None:
        data = await self.storage.objects.get(LOCK_KEY)
        if data is None:
            return None
        try:
            raw = json.loads(data)
            return str(raw["owner"]), float(raw["expires_at"])
        except (ValueError, KeyError, TypeError):
            return None

    async def _write(self) -> None:
        lease = {"owner": self.owner, "expires_at": time.time() + TTL_SECS}
        await self.storage.objects.put(LOCK_KEY, json.dumps(lease).encode())

    async def take(self) -> bool:
        current = await self._current()
        if current is not None and current[0] != self.owner and current[1] > time.time():
            return False
        await self._write()
        await asyncio.sleep(LEASE_SETTLE_SECS)
        current = await self._current()
        return current is not None and current[0] == self.owner

    async def refresh(self) -> bool:
        current = await self._current()
        if current is None or current[0] != self.owner:
            return False
        await self._write()
        return True

    async def release(self) -> None:
        current = await self._current()
        if current is not None and current[0] == self.owner:
            await self.storage.objects.delete(LOCK_KEY)


def lifecycle_lock(storage: RegistryStorage, queue: JobQueue) -> LifecycleLock:
    """Redis where the queue is shared, else the storage lease."""
    return QueueLock(queue) if queue.shared else StorageLease(storage)
