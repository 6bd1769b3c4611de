"""Cache jobs from the frontend: enqueued in the background, so a slow or down queue never
delays a pull."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ...common import tracing
from ...common.metrics import Metrics
from ...common.queue import CacheJob, JobQueue, QueueUnavailable

log = logging.getLogger(__name__)

# How long a just-served tag is listed without being in storage (its job lands well before).
RECENT_TAG_SECS = 60.0


class JobSubmitter:
    """Enqueues cache jobs in the background: a slow or down queue never delays a pull.

    While the queue is down caching is degraded: that is logged once, jobs are dropped
    (the content is simply fetched again on a later pull) and one probe per
    `PROBE_INTERVAL_SECS` checks whether the queue is back."""

    PROBE_INTERVAL_SECS = 2.0
    MAX_PENDING = 1000

    def __init__(self, queue: JobQueue, metrics: Metrics):
        self._queue = queue
        self.metrics = metrics
        self.degraded = False
        self._next_probe = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Jobs handed to the queue in the background and not yet answered."""
        return len(self._pending)

    def _skip(self) -> bool:
        """Drop the job now: the queue is down and not due for a probe, or too much waits."""
        if (self.degraded and time.monotonic() < self._next_probe) or len(
            self._pending
        ) >= self.MAX_PENDING:
            self.dropped += 1
            return True
        return False

    async def submit(self, job: CacheJob) -> None:
        if self._skip():
            return
        task = asyncio.create_task(self._enqueue(job))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def note_recent_tag(self, name: str, tag: str) -> None:
        """Tell every frontend that this tag was just served, so that tag lists show it
        before its cache job lands (in the background; best effort)."""
        if self.degraded or len(self._pending) >= self.MAX_PENDING:
            return
        task = asyncio.create_task(self._note_recent_tag(name, tag))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _note_recent_tag(self, name: str, tag: str) -> None:
        # Queue down: the tag is listed once its cache job lands.
        with contextlib.suppress(QueueUnavailable):
            await self._queue.note_recent_tag(name, tag, RECENT_TAG_SECS)

    async def _enqueue(self, job: CacheJob) -> None:
        try:
            with tracing.span("enqueue cache job", {"registry.job.kind": str(job.kind)}):
                await self._queue.enqueue(job)
        except QueueUnavailable as error:
            self.dropped += 1
            self._next_probe = time.monotonic() + self.PROBE_INTERVAL_SECS
            if not self.degraded:
                self.degraded = True
                self.metrics.caching_degraded.set(1)
                log.warning(
                    "caching degraded: cannot enqueue cache jobs (%s); pulls go on, "
                    "uncached content is fetched from upstream until the queue is back",
                    error,
                )
            return
        if self.degraded:
            self.degraded = False
            self.metrics.caching_degraded.set(0)
            log.info(
                "caching resumed: cache jobs are enqueued again (%d dropped meanwhile)",
                self.dropped,
            )

    async def submit_now(self, job: CacheJob) -> bool:
        """Enqueue and wait for the answer (from background work only); True when queued."""
        if self._skip():
            return False
        await self._enqueue(job)
        return not self.degraded

    def queue_reachable(self) -> None:
        """A health check reached the queue: try the next job at once."""
        self._next_probe = 0.0

    async def flush(self, timeout_secs: float = 5.0) -> None:
        """Wait for enqueues in flight (at shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_secs)
