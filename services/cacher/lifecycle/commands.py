"""`simple-registry prune [--dry-run]` and `simple-registry scrub [--verify] [--dry-run]`.

They run beside live frontends and cachers: they take the lifecycle lock (waiting for a
cacher's run to finish), print what goes and the bytes freed, and delete only in the order
and under the invalidation hold of `deletions.execute`. A dry run takes no lock and
deletes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from ...common.config import Settings
from ...common.metrics import Metrics
from ...common.runtime import build_object_store, build_queue
from ...common.storage import RegistryStorage
from .lock import Guard, LockBusy, lifecycle_lock
from .report import Report
from .tasks import Lifecycle

log = logging.getLogger(__name__)

LOCK_WAIT_SECS = 600.0
LOCK_RETRY_SECS = 2.0
EXIT_FAILED = 1


async def _run(settings: Settings, task: str, *, verify: bool, dry_run: bool) -> Report:
    objects = build_object_store(settings)
    queue = build_queue(settings)
    await objects.open()
    await queue.open()
    try:
        lifecycle = Lifecycle(RegistryStorage(objects), settings, Metrics())

        async def run(guard: Guard | None) -> Report:
            check = guard.check if guard is not None else (lambda: None)
            if task == "prune":
                return await lifecycle.prune(dry_run=dry_run, orphans=True, check=check)
            return await lifecycle.scrub(verify=verify, dry_run=dry_run, check=check)

        if dry_run:
            return await run(None)
        lock = lifecycle_lock(lifecycle.storage, queue)
        deadline = time.monotonic() + LOCK_WAIT_SECS
        waiting = False
        while True:
            try:
                async with lock.held() as guard:
                    return await run(guard)
            except LockBusy:
                if time.monotonic() > deadline:
                    raise
                if not waiting:
                    waiting = True
                    print(f"{task}: waiting for the lifecycle lock (a cacher is running one)")
                await asyncio.sleep(LOCK_RETRY_SECS)
    finally:
        await queue.close()
        await objects.close()


def run_command(
    settings: Settings, task: str, *, verify: bool = False, dry_run: bool = False
) -> int:
    """Run `prune` or `scrub` once; the exit code."""
    try:
        report = asyncio.run(_run(settings, task, verify=verify, dry_run=dry_run))
    except Exception as error:
        print(f"simple-registry {task}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
    for warning in report.warnings:
        print(f"{task}: warning: {warning}")
    for line in report.lines:
        print(f"{task}: {'would remove' if dry_run else 'removed'} {line}")
    print(report.summary())
    return 0
