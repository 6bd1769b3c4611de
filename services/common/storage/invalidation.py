"""Nothing serves what was deleted: how deleters and the frontends' memory agree.

A frontend remembers manifests, tags and layer links (frontend/pullthrough/memory.py), and
answers some pulls from that memory without reading storage. Whoever deletes content — a
prune, a scrub, a DELETE request, on any host — first makes every frontend forget and stop
remembering, and deletes only once they must have:

1. the deleter writes a new token to `_lifecycle/invalidation` (`deleting()` below), and
   rewrites it every `BEAT_SECS` while it deletes;
2. every frontend reads the token every `POLL_SECS`. When it changed, the frontend forgets
   everything and neither remembers nor answers from memory for `HOLD_SECS` after it saw
   it (measured on its own clock: host clocks may disagree);
3. a frontend's memory answers only within `MEMORY_LEASE_SECS` of the start of its last
   successful read of the token: one that cannot read it (storage down, a stalled read)
   stops answering from memory on its own;
4. the deleter waits `SETTLE_SECS` (longer than the lease) after its first write, then
   deletes. By then every frontend has either seen the token or let its lease lapse.

After the last beat, frontends keep their memory off for `HOLD_SECS` and start empty. Two
deleters at once (a prune and a DELETE) each keep the token changing, so memory stays off
until both are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from ..background import running
from .layout import RegistryStorage
from .records import Invalidation

log = logging.getLogger(__name__)

POLL_SECS = 1.0
MEMORY_LEASE_SECS = 5.0
SETTLE_SECS = MEMORY_LEASE_SECS + 1.0
BEAT_SECS = 3.0
HOLD_SECS = 10.0


class InvalidationLost(Exception):
    """The token could not be rewritten for too long: frontends may remember again, so
    the deleter must stop deleting."""


class Hold:
    """What `deleting()` yields: `check()` before each batch of deletes."""

    def __init__(self) -> None:
        self._written_at = time.monotonic()  # the start of the last successful write

    def written(self, started: float) -> None:
        self._written_at = started

    def check(self) -> None:
        # Frontends saw the last token no earlier than it was started, so they hold their
        # memory off until at least then + HOLD_SECS; keep a beat of margin.
        if time.monotonic() - self._written_at > HOLD_SECS - BEAT_SECS:
            raise InvalidationLost(
                "cannot rewrite the invalidation token; stopping before frontends "
                "could remember what is being deleted"
            )


async def announce(storage: RegistryStorage) -> None:
    """Write a new token: every frontend forgets within POLL_SECS."""
    await storage.put_invalidation(Invalidation(uuid.uuid4().hex, time.time()))


@contextlib.asynccontextmanager
async def deleting(storage: RegistryStorage) -> AsyncIterator[Hold]:
    """Enter once no frontend may answer from memory; deletes go inside the block, each
    batch after `hold.check()`."""
    hold = Hold()
    await announce(storage)
    async with running(_beat(storage, hold)):
        await asyncio.sleep(SETTLE_SECS)
        yield hold


async def _beat(storage: RegistryStorage, hold: Hold) -> None:
    while True:
        await asyncio.sleep(BEAT_SECS)
        started = time.monotonic()
        try:
            await announce(storage)
        except Exception as error:
            log.warning("invalidation beat failed: %s", error)
            continue
        hold.written(started)
