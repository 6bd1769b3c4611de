"""Pull times (`[global] update_pull_time`): when each tag and manifest was last pulled.

Recorded off the hot path: a pull only notes the time in a dict; a background task writes
the records every `TICK_SECS`, a bounded number at a time, and rewrites a record only when
its time moved on by `[eviction] pull_time_resolution_secs`. A pull never waits for it, and
a hot tag costs at most one small write per resolution period per frontend.

The frontend writes these records itself, rather than handing them to a cacher: they are
not content (a lost one only makes an image look less recently pulled), they keep working
while the queue is down, and batching here costs no queue traffic. By tag, the tag's record;
by digest, the manifest's record under that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ...common.batches import in_batches
from ...common.metrics import Metrics
from ...common.oci import Reference
from ...common.storage import RegistryStorage

log = logging.getLogger(__name__)

TICK_SECS = 1.0
WRITES_AT_ONCE = 8
MAX_KEYS = 100_000  # pending and remembered: beyond, pulls are not recorded until a flush

_Key = tuple[str, Reference]


class PullRecorder:
    def __init__(self, storage: RegistryStorage, metrics: Metrics, resolution_secs: float):
        self.storage = storage
        self.metrics = metrics
        self.resolution_secs = resolution_secs
        self._pending: dict[_Key, float] = {}
        self._written: dict[_Key, float] = {}
        self._failing = False

    def record(self, name: str, reference: Reference) -> None:
        """Note a pull now (a dict write; nothing waits)."""
        key = (name, reference)
        if key in self._pending or len(self._pending) < MAX_KEYS:
            self._pending[key] = time.time()

    async def flush(self) -> None:
        due: list[tuple[_Key, float]] = []
        for key, when in self._pending.items():
            if when - self._written.get(key, float("-inf")) >= self.resolution_secs:
                due.append((key, when))
        # Not due: within the resolution of what was written, so not worth a write.
        self._pending.clear()
        await in_batches(due, lambda item: self._write(*item), WRITES_AT_ONCE)

    async def _write(self, key: _Key, when: float) -> None:
        name, reference = key
        try:
            await self.storage.put_pull_time(name, reference, when)
        except Exception as error:
            self.metrics.pull_times_written.labels("failed").inc()
            if not self._failing:
                self._failing = True
                log.warning("cannot record pull times (%s); pulls go on", error)
            return
        self._failing = False
        self.metrics.pull_times_written.labels("ok").inc()
        if len(self._written) >= MAX_KEYS:
            self._written.clear()
        self._written[key] = when

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(TICK_SECS)
                await self.flush()
        finally:
            # Stopping: what was noted goes out, briefly.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.flush()
