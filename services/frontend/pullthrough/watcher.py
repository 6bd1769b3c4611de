"""The frontend's side of "nothing serves what was deleted" (common/storage/invalidation.py):
read the invalidation token every POLL_SECS; forget and hold memory off when it changes
(and drop finished spools, which answer late arrivals of a download); let memory answer
only while the last read is recent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ...common.metrics import Metrics
from ...common.storage import RegistryStorage
from ...common.storage.invalidation import HOLD_SECS, MEMORY_LEASE_SECS, POLL_SECS
from .memory import PullMemory

log = logging.getLogger(__name__)

_UNSEEN = object()
MAX_READS_IN_FLIGHT = 4


class InvalidationWatcher:
    def __init__(
        self,
        storage: RegistryStorage,
        memory: PullMemory,
        metrics: Metrics,
        also_forget: Callable[[], None] = lambda: None,
    ):
        self.storage = storage
        self.memory = memory
        self.metrics = metrics
        self.also_forget = also_forget
        self._token: object = _UNSEEN
        self._latest = 0.0  # the start of the newest read that answered
        self._failing = False
        self._reads: set[asyncio.Task[None]] = set()
        memory.require_lease()

    async def poll(self) -> None:
        """One read of the token; memory is confirmed only by a read that answered."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(MEMORY_LEASE_SECS):
                current = await self.storage.get_invalidation()
        except Exception as error:
            if not self._failing:
                self._failing = True
                log.warning("cannot read the invalidation token (%s): memory is off", error)
            return
        if started < self._latest:
            return  # a slow read answered after a newer one: it says nothing new
        self._latest = started
        if self._failing:
            self._failing = False
            log.info("invalidation token readable again: memory is back")
        token = current.token if current is not None else None
        if token != self._token:
            first = self._token is _UNSEEN
            self._token = token
            # At start-up only a recent token means a deletion may be under way.
            if not first or (current is not None and time.time() - current.written_at < HOLD_SECS):
                self.memory.suspend(HOLD_SECS)
                self.also_forget()
                self.metrics.memory_invalidations.inc()
                log.info("content is being deleted: memory forgotten and held off")
        self.memory.confirm(started + MEMORY_LEASE_SECS)

    async def run(self) -> None:
        """A read starts every POLL_SECS, without waiting for a slow one to answer, so a
        storage answering within MEMORY_LEASE_SECS - POLL_SECS keeps memory on."""
        try:
            while True:
                if len(self._reads) < MAX_READS_IN_FLIGHT:
                    read = asyncio.create_task(self.poll())
                    self._reads.add(read)
                    read.add_done_callback(self._reads.discard)
                await asyncio.sleep(POLL_SECS)
        finally:
            for read in list(self._reads):
                read.cancel()
