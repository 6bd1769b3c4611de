"""A cap on concurrent blob downloads from one upstream (`max_concurrent_downloads`).

Blob bodies can take minutes; manifests, HEADs and tokens take milliseconds. Without a cap
of their own, slow downloads (whose clients may have left: a spool finishes for the cache)
would take every pooled connection to the upstream and everything else would queue behind
them. Downloads take a slot first, waiting at most `connect_timeout_secs` for one; when
none frees up the caller gets `UpstreamBusy` (429 with Retry-After for a client, a retry
later for the cacher), never an unbounded wait. Manifest, HEAD and token requests take no
slot.
"""

from __future__ import annotations

import asyncio

from .errors import UpstreamBusy

BUSY_RETRY_AFTER_SECS = 5.0


class DownloadSlots:
    def __init__(self, host: str, limit: int, wait_secs: float):
        self.host = host
        self.limit = limit
        self.wait_secs = wait_secs
        self._semaphore = asyncio.Semaphore(limit)

    async def acquire(self) -> None:
        """Take a slot or raise UpstreamBusy after `wait_secs`; `release()` gives it back."""
        try:
            async with asyncio.timeout(self.wait_secs):
                await self._semaphore.acquire()
        except TimeoutError:
            raise UpstreamBusy(
                self.host,
                f"{self.limit} downloads from this upstream in progress "
                f"(max_concurrent_downloads); none finished within {self.wait_secs:.0f}s",
                BUSY_RETRY_AFTER_SECS,
            ) from None

    def release(self) -> None:
        self._semaphore.release()
