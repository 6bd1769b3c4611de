"""Coalesced blob misses: one upstream download per digest, any number of clients.

The first miss of a digest starts a `Spool`: a task (not tied to any client) that streams
the upstream's bytes into a spool file while hashing them. Every client of that digest —
the first and any that arrive while it runs — reads the spool file at its own pace with
sendfile, so memory stays bounded, a slow client never slows the download or the other
clients, and a client that disconnects cancels nothing.

Integrity: the last byte is released only once the whole blob hashed to its digest; on a
mismatch or an interrupted download every client's connection is aborted, so no client
sees a clean finish of wrong bytes, and nothing is handed to the cacher.

Hand-over: with filesystem storage the spool file lives in the storage's `_staging/`
folder, and the cache job names it, so the cacher verifies and commits these very bytes
instead of fetching the blob a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from ..common.oci import Digest
from ..common.upstream import UpstreamError
from ..common.upstream.client import BlobDownload

log = logging.getLogger("simple_registry.frontend")

# How long a finished spool keeps answering late arrivals before it is dropped.
GRACE_SECS = 30.0
_SENDFILE_FALLBACK_CHUNK = 256 * 1024


SPOOL_CHUNK_SIZE = 1024 * 1024


def _absorb(hasher: Any, file: BinaryIO, chunk: bytes) -> int:
    hasher.update(chunk)
    file.write(chunk)
    return len(chunk)


class SpoolFailed(Exception):
    pass


class Spool:
    def __init__(self, digest: Digest, path: Path, size: int | None):
        self.digest = digest
        self.path = path
        self.size = size
        self.written = 0
        self.done = False
        self.ok = False
        self.error: str | None = None
        self.readers = 0
        self.handed_over = False  # the cacher owns the file now
        self.busy = False  # still being read for the hand-over: keep it
        self.finished_at = 0.0
        self._file: BinaryIO
        self._progress: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _notify(self) -> None:
        progress, self._progress = self._progress, asyncio.get_running_loop().create_future()
        if not progress.done():
            progress.set_result(None)

    async def wait_for_progress(self) -> None:
        await asyncio.shield(self._progress)

    def releasable(self) -> int:
        """Bytes a client may be sent now: all of them once verified, else all but the last."""
        if self.ok:
            return self.written
        if self.size is not None:
            return min(self.written, self.size - 1)
        return max(self.written - 1, 0)

    async def produce(
        self,
        download: BlobDownload,
        max_size: int | None,
        on_success: Callable[[Spool, int], Awaitable[None]],
    ) -> None:
        hasher = self.digest.hasher()
        file = self._file
        loop = asyncio.get_running_loop()
        received = 0
        # Hashing and writing run in a thread (hashlib releases the GIL), one chunk at a
        # time and in order, while the event loop reads the next chunk and serves clients.
        absorbing: asyncio.Future[int] | None = None
        try:
            async with download:
                async for chunk in download.chunks(SPOOL_CHUNK_SIZE):
                    received += len(chunk)
                    if max_size is not None and received > max_size:
                        raise SpoolFailed(f"blob exceeds max_blob_size ({max_size} bytes)")
                    if absorbing is not None:
                        self._advance(await absorbing)
                    absorbing = loop.run_in_executor(None, _absorb, hasher, file, chunk)
                if absorbing is not None:
                    self._advance(await absorbing)
                    absorbing = None
            actual = f"{self.digest.algorithm}:{hasher.hexdigest()}"
            if actual != str(self.digest):
                raise SpoolFailed(
                    f"upstream blob digest mismatch: expected {self.digest}, got {actual} "
                    f"after {self.written} bytes"
                )
            self.size = self.written
            self.ok = True
        except (UpstreamError, SpoolFailed, OSError) as error:
            self.error = str(error)
            log.error("blob download failed digest=%s: %s; nothing cached", self.digest, error)
        finally:
            if absorbing is not None:
                with contextlib.suppress(Exception):
                    await absorbing
            file.close()
            self.done = True
            self.finished_at = time.monotonic()
            self._notify()
        if self.ok:
            await on_success(self, self.written)

    def _advance(self, size: int) -> None:
        self.written += size
        self._notify()

    def create(self) -> None:
        """Create the spool file before any client may try to read it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 - closed by produce()

    def discard(self) -> None:
        if not self.handed_over:
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def stream_to(self, request: web.Request, response: web.StreamResponse) -> bool:
        """Send the blob to one client as it arrives; False when the transfer was aborted."""
        try:
            file = await asyncio.to_thread(open, self.path, "rb")
        except OSError:
            return False  # the cacher committed it and the spool is gone: caller retries
        self.readers += 1
        try:
            await response.prepare(request)
            offset = 0
            while True:
                available = self.releasable()
                if offset < available:
                    await _send_range(request, response, file, offset, available - offset)
                    offset = available
                    continue
                if self.done:
                    break
                await self.wait_for_progress()
            if not self.ok:
                _abort(request)
                return False
            await response.write_eof()
            return True
        except ConnectionError:
            return False  # the client went away; the download goes on for the others
        finally:
            self.readers -= 1
            await asyncio.to_thread(file.close)


async def _send_range(
    request: web.Request, response: web.StreamResponse, file: BinaryIO, offset: int, count: int
) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client disconnected")
    if not response.chunked:  # chunked framing cannot go through sendfile
        try:
            # Headers were written by prepare(); sendfile waits for them to drain first.
            await asyncio.get_running_loop().sendfile(transport, file, offset, count)
            return
        except NotImplementedError:
            pass
    file.seek(offset)
    while count > 0:
        chunk = await asyncio.to_thread(file.read, min(count, _SENDFILE_FALLBACK_CHUNK))
        if not chunk:
            raise ConnectionResetError("spool shorter than announced")
        await response.write(chunk)
        count -= len(chunk)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


class Fanout:
    """The spools in progress (and recently finished) on this frontend, by digest."""

    def __init__(self, spool_dir: Path):
        self.spool_dir = spool_dir
        self._spools: dict[str, Spool] = {}
        self._starting: dict[str, asyncio.Future[Spool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def spool_for(
        self,
        digest: Digest,
        open_download: Callable[[], Awaitable[BlobDownload]],
        max_size: int | None,
        on_success: Callable[[Spool, int], Awaitable[None]],
    ) -> tuple[Spool, bool]:
        """The spool of `digest`, started if needed; True when another request started it.

        Requests that arrive while the first one is still waiting for the upstream's answer
        wait for that same answer (or error) instead of opening downloads of their own."""
        spool = self.active(digest)
        if spool is not None:
            return spool, True
        key = str(digest)
        starting = self._starting.get(key)
        if starting is not None:
            return await asyncio.shield(starting), True
        starting = asyncio.get_running_loop().create_future()
        # Waiters get the exception; nobody may be waiting, so mark it retrieved.
        starting.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._starting[key] = starting
        try:
            download = await open_download()
            try:
                spool = self.start(digest, download, max_size, on_success)
            except BaseException as error:
                await download.__aexit__(type(error), error, None)
                raise
        except BaseException as error:
            starting.set_exception(error)
            raise
        finally:
            self._starting.pop(key, None)
        starting.set_result(spool)
        return spool, False

    def active(self, digest: Digest) -> Spool | None:
        self._expire()
        spool = self._spools.get(str(digest))
        if spool is not None and spool.done and not spool.ok:
            return None
        return spool

    def start(
        self,
        digest: Digest,
        download: BlobDownload,
        max_size: int | None,
        on_success: Callable[[Spool, int], Awaitable[None]],
    ) -> Spool:
        path = self.spool_dir / f"{digest.algorithm}-{digest.hex}.{uuid.uuid4().hex}"
        spool = Spool(digest, path, download.size)
        spool.create()
        self._spools[str(digest)] = spool
        task = asyncio.create_task(spool.produce(download, max_size, on_success))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return spool

    def _expire(self) -> None:
        now = time.monotonic()
        for key, spool in list(self._spools.items()):
            if (
                spool.done
                and spool.readers == 0
                and not spool.busy
                and (not spool.ok or now - spool.finished_at > GRACE_SECS)
            ):
                del self._spools[key]
                spool.discard()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        for spool in self._spools.values():
            if spool.done:
                spool.discard()
        self._spools.clear()

    def sweep_stale(self, older_than_secs: float = 3600.0) -> None:
        """Spool files left by a frontend that died (called at start-up)."""
        cutoff = time.time() - older_than_secs
        if not self.spool_dir.is_dir():
            return
        for entry in os.scandir(self.spool_dir):
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
