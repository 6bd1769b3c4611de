"""Coalesced blob misses: one upstream download per digest, any number of clients.

The first miss of a digest starts a `Spool`: a task (not tied to any client) that streams
the upstream's bytes into a spool file while hashing them. Every client of that digest —
the first and any that arrive while it runs — reads the spool file at its own pace, so
memory stays bounded, a slow client never slows the download or the other clients, and a
client that disconnects cancels nothing.

Integrity: the last byte is released only once the whole blob hashed to its digest; on a
mismatch or an interrupted download the spool fails, every reader is told so (and aborts
its client's connection), and the file is removed at once.

A spool moves through one state at a time:

    DOWNLOADING --> VERIFIED --> HANDING_OVER --> VERIFIED    (bytes copied to staging)
          |             \\-----> HANDED_OVER                  (the cacher owns the file)
          \\--> FAILED
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from ...common.oci import Digest
from ...common.storage import owners
from ...common.storage.owners import owner_in
from ...common.storage.staging import parse_staged_key, staged_key, staged_name
from ...common.upstream import BlobDownload, UpstreamError
from ...common.upstream.socketbody import SocketBody

log = logging.getLogger(__name__)

# How long a finished spool keeps answering late arrivals before it is dropped.
GRACE_SECS = 30.0
SPOOL_CHUNK_SIZE = 1024 * 1024


class SpoolState(StrEnum):
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    HANDING_OVER = "handing-over"
    HANDED_OVER = "handed-over"
    # Verified, but no cache job took it (the queue was down): it serves the clients
    # already reading; the next miss downloads again, so that its bytes get cached.
    UNCLAIMED = "unclaimed"
    FAILED = "failed"


class SpoolFailed(Exception):
    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def _write_all(file: BinaryIO, chunk: bytes | memoryview) -> None:
    view = memoryview(chunk)
    while view:  # an unbuffered file may take less than it was given
        view = view[file.write(view) or 0 :]


def _absorb(hasher: Any, file: BinaryIO, chunk: bytes | memoryview) -> int:
    hasher.update(chunk)
    _write_all(file, chunk)
    return len(chunk)


OnVerified = Callable[["Spool"], Awaitable[None]]


class Spool:
    def __init__(self, digest: Digest, path: Path, size: int | None):
        self.digest = digest
        self.path = path
        self.size = size
        self.written = 0
        self.state = SpoolState.DOWNLOADING
        self.readers = 0
        self.finished_at = 0.0
        self._file: BinaryIO
        self._progress: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self.state is not SpoolState.DOWNLOADING

    @property
    def verified(self) -> bool:
        return self.state in (
            SpoolState.VERIFIED,
            SpoolState.HANDING_OVER,
            SpoolState.HANDED_OVER,
            SpoolState.UNCLAIMED,
        )

    def _notify(self) -> None:
        progress, self._progress = self._progress, asyncio.get_running_loop().create_future()
        if not progress.done():
            progress.set_result(None)

    async def wait_for_progress(self) -> None:
        await asyncio.shield(self._progress)

    def releasable(self) -> int:
        """Bytes a client may be sent now: all of them once verified, else all but the last."""
        if self.verified:
            return self.written
        if self.size is not None:
            return min(self.written, self.size - 1)
        return max(self.written - 1, 0)

    def create(self) -> None:
        """Create the spool file before any client may try to read it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 - closed by produce()

    async def produce(
        self, download: BlobDownload, max_size: int | None, on_verified: OnVerified
    ) -> None:
        hasher = self.digest.hasher()
        file = self._file
        try:
            async with download:
                body = download.socket_body()
                if body is not None:
                    await self._read_socket(download, body, hasher, file, max_size)
                else:
                    await self._read_chunks(download, hasher, file, max_size)
            actual = f"{self.digest.algorithm}:{hasher.hexdigest()}"
            if actual != str(self.digest):
                raise SpoolFailed(
                    f"upstream blob digest mismatch: expected {self.digest}, got {actual} "
                    f"after {self.written} bytes",
                    "digest_mismatch",
                )
            self.size = self.written
            self.state = SpoolState.VERIFIED
        except (UpstreamError, SpoolFailed, OSError) as error:
            self.state = SpoolState.FAILED
            if isinstance(error, SpoolFailed):
                download.failed(error.cause, str(error))
            log.error("blob download failed digest=%s: %s; nothing cached", self.digest, error)
        finally:
            file.close()
            if self.state is SpoolState.DOWNLOADING:  # cancelled
                self.state = SpoolState.FAILED
            if self.state is SpoolState.FAILED:
                # Readers keep their open file; nothing else may find a failed spool.
                self.discard()
            self.finished_at = time.monotonic()
            self._notify()
        if self.verified:
            await on_verified(self)

    async def _read_socket(
        self,
        download: BlobDownload,
        body: SocketBody,
        hasher: Any,
        file: BinaryIO,
        max_size: int | None,
    ) -> None:
        """Read, hash and write in the socket's own thread; the loop hears of each piece
        once it is in the file."""
        if max_size is not None and body.size > max_size:
            raise SpoolFailed(f"blob exceeds max_blob_size ({max_size} bytes)", "size_limit")

        def absorb(piece: memoryview) -> None:
            _absorb(hasher, file, piece)

        await download.pump(body, absorb, self._advance)

    async def _read_chunks(
        self, download: BlobDownload, hasher: Any, file: BinaryIO, max_size: int | None
    ) -> None:
        """aiohttp's reads; hashing and writing run in a thread (hashlib releases the GIL),
        one chunk at a time and in order, while the event loop reads the next chunk."""
        loop = asyncio.get_running_loop()
        received = 0
        absorbing: asyncio.Future[int] | None = None
        try:
            async for chunk in download.chunks(SPOOL_CHUNK_SIZE):
                received += len(chunk)
                if max_size is not None and received > max_size:
                    raise SpoolFailed(
                        f"blob exceeds max_blob_size ({max_size} bytes)", "size_limit"
                    )
                if absorbing is not None:
                    self._advance(await absorbing)
                absorbing = loop.run_in_executor(None, _absorb, hasher, file, chunk)
            if absorbing is not None:
                self._advance(await absorbing)
                absorbing = None
        finally:
            if absorbing is not None:  # let the write end before the file is closed
                with contextlib.suppress(Exception):
                    await absorbing

    def _advance(self, size: int) -> None:
        self.written += size
        self._notify()

    def discard(self) -> None:
        if self.state is not SpoolState.HANDED_OVER:
            with contextlib.suppress(OSError):
                self.path.unlink()


class Fanout:
    """The spools in progress (and recently finished) on this frontend, by digest."""

    def __init__(self, spool_dir: Path):
        self.spool_dir = spool_dir
        # This process's own folder: spools in progress live here until handed over (then
        # they move up into `spool_dir`, the staging folder the cacher reads).
        self.owner_dir = spool_dir / owner_in(spool_dir).name
        self._spools: dict[str, Spool] = {}
        self._starting: dict[str, asyncio.Future[Spool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def downloading(self) -> int:
        return sum(1 for spool in self._spools.values() if not spool.done)

    @property
    def busy(self) -> int:
        """Downloads being opened or running, their hand-over to the cacher included."""
        return len(self._starting) + len(self._tasks)

    async def spool_for(
        self,
        digest: Digest,
        open_download: Callable[[], Awaitable[BlobDownload]],
        max_size: int | None,
        on_verified: OnVerified,
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
                spool = self._start(digest, download, max_size, on_verified)
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
        if spool is not None and spool.state in (SpoolState.FAILED, SpoolState.UNCLAIMED):
            return None
        if self.committed_since(digest):
            # The cacher committed it (storage answers now), or it was deleted since: a
            # spool whose file is gone must not answer for it.
            return None
        return spool

    def committed_since(self, digest: Digest) -> bool:
        """Was a spool of `digest` handed over and has the cacher taken its file since?"""
        spool = self._spools.get(str(digest))
        return (
            spool is not None and spool.state is SpoolState.HANDED_OVER and not spool.path.exists()
        )

    def _start(
        self,
        digest: Digest,
        download: BlobDownload,
        max_size: int | None,
        on_verified: OnVerified,
    ) -> Spool:
        spool = Spool(digest, self.owner_dir / staged_name(digest), download.size)
        spool.create()
        self._spools[str(digest)] = spool
        task = asyncio.create_task(spool.produce(download, max_size, on_verified))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return spool

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._expire()
        # Drop the finished spool once its grace period is over, even if no miss comes.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_later(GRACE_SECS + 1.0, self._expire)

    def _expire(self) -> None:
        now = time.monotonic()
        for key, spool in list(self._spools.items()):
            if (
                spool.done
                and spool.readers == 0
                and spool.state is not SpoolState.HANDING_OVER
                and (
                    spool.state in (SpoolState.FAILED, SpoolState.UNCLAIMED)
                    or now - spool.finished_at > GRACE_SECS
                )
            ):
                del self._spools[key]
                spool.discard()

    def forget_finished(self) -> None:
        """Content is being deleted (invalidation): finished spools stop answering late
        arrivals, which then read storage or download again. A reader already sending keeps
        its open file."""
        for key, spool in list(self._spools.items()):
            if spool.done and spool.state is not SpoolState.HANDING_OVER:
                del self._spools[key]
                spool.discard()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        for spool in self._spools.values():
            if spool.done:
                spool.discard()
        self._spools.clear()
        # Whatever is left is this process's and nobody else's (handed-over spools moved
        # out of it): downloads cut short by the stop.
        await asyncio.to_thread(shutil.rmtree, self.owner_dir, True)

    def sweep_stale(self, older_than_secs: float = 3600.0) -> int:
        """What frontends that are gone left in the spool folder (called at start-up); how
        many files went. The folders of dead owners (their spools, partial or not) go
        whatever their age; so do their lock files. A staged file (handed over, waiting
        for the cacher) goes once older than `older_than_secs`: its job was lost."""
        removed = 0
        if not self.spool_dir.is_dir():
            return removed
        cutoff = time.time() - older_than_secs
        owners.dead_owners(self.spool_dir)
        for entry in os.scandir(self.spool_dir):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    if owners.is_owner_name(entry.name) and not owners.alive(
                        self.spool_dir, entry.name
                    ):
                        removed += sum(len(files) for _, _, files in os.walk(entry.path))
                        shutil.rmtree(entry.path)
                elif (
                    entry.is_file(follow_symlinks=False)
                    and parse_staged_key(staged_key(entry.name)) is not None
                    and entry.stat().st_mtime < cutoff
                ):
                    os.unlink(entry.path)
                    removed += 1
        return removed
