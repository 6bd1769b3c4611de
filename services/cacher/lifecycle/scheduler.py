"""The cacher's background lifecycle: every `[eviction] interval_secs`, prune (retention and
the budget) then scrub (garbage collection), by whichever cacher takes the lock.

With `interval_secs = 0` the cacher only measures usage (every `USAGE_ONLY_SECS`); retention
and GC then run only from the `prune` and `scrub` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ...common.runtime import Runtime
from .lock import LockBusy, lifecycle_lock
from .report import Report
from .tasks import Lifecycle

log = logging.getLogger(__name__)

FIRST_RUN_SECS = 5.0
USAGE_ONLY_SECS = 300.0


async def run_lifecycle(runtime: Runtime, stop: asyncio.Event) -> None:
    """Until `stop` is set. Cancelling it mid-run is safe: deletes are ordered, a later run
    finishes what this one started."""
    eviction = runtime.settings.eviction
    lifecycle = Lifecycle(runtime.storage, runtime.settings, runtime.metrics)
    lock = lifecycle_lock(runtime.storage, runtime.queue)
    runtime.metrics.storage_budget_bytes.set(eviction.max_size or 0)
    period = eviction.interval_secs or USAGE_ONLY_SECS
    delay = min(FIRST_RUN_SECS, period)
    while not await _stopped(stop, delay):
        delay = period
        try:
            async with lock.held() as guard:
                if eviction.interval_secs <= 0:
                    await lifecycle.measure_usage()
                    continue
                log.info("lifecycle run started holder=%s", lock.owner)
                await timed(runtime, "prune", lambda: lifecycle.prune(check=guard.check))
                await timed(runtime, "scrub", lambda: lifecycle.scrub(check=guard.check))
        except LockBusy:
            log.debug("lifecycle: another process holds the lock")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.error("lifecycle run failed: %s: %s", type(error).__name__, error)


async def timed(runtime: Runtime, task: str, run: Callable[[], Awaitable[Report]]) -> None:
    metrics = runtime.metrics
    started = time.monotonic()
    try:
        report = await run()
    except Exception:
        metrics.lifecycle_errors.labels(task).inc()
        raise
    finally:
        metrics.lifecycle_duration.labels(task).set(time.monotonic() - started)
        metrics.lifecycle_last_run.labels(task).set(time.time())
    for warning in report.warnings:
        log.warning("%s: %s", task, warning)
    for line in report.lines:
        log.info("%s: %s", task, line)
    log.info("%s", report.summary())


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
