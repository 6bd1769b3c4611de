"""The cacher's loop: reserve jobs, run up to `max_concurrent_cache_jobs` at once, ack,
retry with exponential backoff, dead-letter after the last attempt.

Stop (SIGTERM): no new jobs are reserved; running jobs get `drain_secs` to finish, the rest
are cancelled and stay pending in the queue, to be claimed again (at least once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Awaitable

from ..common import tracing
from ..common.config import RedisQueueSettings, default_of
from ..common.queue import Delivery, JobQueue, QueueUnavailable
from ..common.runtime import Runtime
from ..common.upstream import UpstreamError
from .persist import JobDeferred, JobHandler, PermanentJobError

log = logging.getLogger(__name__)

DEFERRED_DELAY_SECS = 2.0
RECONNECT_FIRST_DELAY_SECS = 0.5


def consumer_name() -> str:
    return f"{socket.gethostname()}-{id(object()):x}-{random.getrandbits(24):06x}"


class Cacher:
    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int | None = None,
        max_attempts: int | None = None,
        backoff_secs: float | None = None,
        backoff_max_secs: float | None = None,
    ):
        settings = runtime.settings
        retry = settings.retry
        self.queue: JobQueue = runtime.queue
        self.storage = runtime.storage
        self.handler = JobHandler(
            runtime.storage,
            runtime.upstreams,
            runtime.router,
            runtime.queue,
            settings.global_.max_manifest_size,
            settings.global_.max_blob_size,
        )
        self.concurrency = concurrency or settings.global_.max_concurrent_cache_jobs
        self.max_attempts = max_attempts or retry.max_attempts
        self.backoff_secs = backoff_secs or retry.retry_backoff_secs
        self.backoff_max_secs = backoff_max_secs or retry.retry_backoff_max_secs
        self.consumer = consumer_name()
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = runtime.metrics
        self.outcomes: dict[str, int] = {}
        # Only Redis can be out of reach; the in-process queue never is.
        self.reconnect_max_secs = (
            settings.queue.reconnect_backoff_max_secs
            if settings.queue is not None
            else default_of(RedisQueueSettings, "reconnect_backoff_max_secs")
        )

    @property
    def running(self) -> int:
        """Jobs this cacher is running now."""
        return len(self._tasks)

    async def run(self, stop: asyncio.Event, drain_secs: float = 30.0) -> None:
        log.info(
            "cacher started consumer=%s concurrency=%d queue=%s",
            self.consumer,
            self.concurrency,
            self.queue.kind,
        )
        sweep = asyncio.create_task(self._sweep_temp_files())
        reconnect_delay = RECONNECT_FIRST_DELAY_SECS
        while not stop.is_set():
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                deliveries = await self.queue.reserve(self.consumer, free, block_secs=1.0)
            except QueueUnavailable as error:
                log.warning(
                    "cacher cannot reach the queue (%s); retrying in %.1fs", error, reconnect_delay
                )
                await _sleep_unless(stop, reconnect_delay)
                reconnect_delay = min(reconnect_delay * 2, self.reconnect_max_secs)
                continue
            reconnect_delay = RECONNECT_FIRST_DELAY_SECS
            for delivery in deliveries:
                task = asyncio.create_task(self._process(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        sweep.cancel()
        await self._drain(drain_secs)
        log.info("cacher stopped consumer=%s outcomes=%s", self.consumer, self.outcomes)

    async def _sweep_temp_files(self) -> None:
        """Temp files of writers that are gone (a crash, a kill -9), at start-up; a live
        writer's temp files (another cacher's, on shared storage) are left alone."""
        try:
            removed = await self.storage.objects.sweep_temp_files()
        except Exception as error:
            log.warning("sweep of temp files failed: %s", error)
            return
        log.info("temp-file sweep done: removed %d left by writers that are gone", removed)

    async def _drain(self, drain_secs: float) -> None:
        if not self._tasks:
            return
        log.info("cacher draining %d running jobs (up to %.0fs)", len(self._tasks), drain_secs)
        _done, pending = await asyncio.wait(set(self._tasks), timeout=drain_secs)
        for task in pending:
            task.cancel()
        if pending:
            # Cancelled jobs stay pending in the queue and are claimed again later.
            await asyncio.wait(pending)

    def _count(self, outcome: str, kind: str = "unknown") -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.metrics.jobs.labels(kind, outcome).inc()

    async def _process(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            self._count("dead-lettered")
            await self._safely(
                self.queue.dead_letter(delivery, delivery.raw_error or "undecodable job")
            )
            return
        started = time.monotonic()
        try:
            with tracing.span(
                f"cache job {job.kind}",
                {"registry.job.kind": str(job.kind), "registry.job.attempt": job.attempt},
                parent=job.traceparent,
            ):
                outcome = await self.handler.handle(job)
                tracing.annotate("registry.job.outcome", outcome)
        except asyncio.CancelledError:
            raise
        except JobDeferred as deferred:
            log.debug("job deferred digest=%s: %s", job.digest, deferred)
            await self._safely(self.queue.retry(delivery, job, DEFERRED_DELAY_SECS))
            return
        except PermanentJobError as error:
            log.error("job failed permanently kind=%s digest=%s: %s", job.kind, job.digest, error)
            self._count("dead-lettered", job.kind)
            await self.handler.discard_staged(job)
            await self._safely(self.queue.dead_letter(delivery, str(error)))
            return
        except Exception as error:
            await self._failed(delivery, error)
            return
        self._count(outcome, job.kind)
        self.metrics.job_duration.labels(job.kind).observe(time.monotonic() - started)
        log.info(
            "job done kind=%s name=%s digest=%s outcome=%s attempt=%d duration_ms=%.1f",
            job.kind,
            job.storage_name,
            job.digest,
            outcome,
            job.attempt,
            (time.monotonic() - started) * 1000,
        )
        await self._safely(self.queue.ack(delivery))

    async def _failed(self, delivery: Delivery, error: Exception) -> None:
        job = delivery.job
        assert job is not None
        reason = (
            str(error) if isinstance(error, UpstreamError) else f"{type(error).__name__}: {error}"
        )
        attempts = job.attempt + 1
        if attempts >= self.max_attempts:
            log.error(
                "job dead-lettered kind=%s digest=%s after %d attempts: %s",
                job.kind,
                job.digest,
                attempts,
                reason,
            )
            self._count("dead-lettered", job.kind)
            await self.handler.discard_staged(job)
            await self._safely(self.queue.dead_letter(delivery, reason))
            return
        delay = min(self.backoff_secs * 2**job.attempt, self.backoff_max_secs)
        delay *= random.uniform(0.8, 1.2)
        log.warning(
            "job failed kind=%s digest=%s attempt=%d retry_in=%.1fs: %s",
            job.kind,
            job.digest,
            attempts,
            delay,
            reason,
        )
        self._count("retried", job.kind)
        await self._safely(self.queue.retry(delivery, job.next_attempt(reason), delay))

    async def _safely(self, operation: Awaitable[None]) -> None:
        try:
            await operation
        except QueueUnavailable as error:
            # The job stays pending and is claimed again once the queue is back.
            log.warning("queue unavailable while finishing a job: %s", error)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
