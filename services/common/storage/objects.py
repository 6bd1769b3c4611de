"""The object store interface both backends implement: keys as paths, atomic publication.

A key becomes visible only when it is complete: `put` and `ObjectWriter.commit` publish in
one step (fs: rename of a temp file; S3: completing a multipart upload), so a reader never
sees a partial object.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class DigestMismatch(Exception):
    """Written bytes do not hash to the expected digest; nothing was published."""

    def __init__(self, expected: str, actual: str, size: int):
        super().__init__(f"digest mismatch: expected {expected}, got {actual} ({size} bytes)")
        self.expected = expected
        self.actual = actual
        self.size = size


class StorageUnavailable(Exception):
    """The backend could not be reached or failed; the key may or may not exist."""


@dataclass(frozen=True, slots=True)
class ObjectStat:
    size: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A committed key as a listing sees it: its size and when it was last written."""

    key: str
    size: int
    modified: float  # unix time of the last write (fs: the later of mtime and ctime)


class ObjectWriter(abc.ABC):
    """A streaming write of one key; invisible until `commit`."""

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None:
        """Publish the object atomically under its key."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Discard everything written; never raises."""


class ObjectStore(abc.ABC):
    shared: bool = False  # can several processes on several hosts use it at once?

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectStat | None: ...

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Write a small object atomically (replacing any previous one)."""

    @abc.abstractmethod
    async def writer(self, key: str) -> ObjectWriter: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> AsyncIterator[str]:
        """Every committed key under `prefix` (which ends with '/'), in no order."""

    @abc.abstractmethod
    def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Like `list`, with each key's size and modification time (for the lifecycle)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete several keys; all are gone when it returns, in no particular order (a
        backend may batch them). Callers that need an order make one call per step."""
        for key in keys:
            await self.delete(key)

    @abc.abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (exclusive) of a committed key."""

    async def promote(self, source: str, destination: str) -> None:
        """Publish the committed object `source` under `destination` and remove `source`.
        The generic way copies; a backend that can rename does."""
        writer = await self.writer(destination)
        try:
            async for chunk in self.read(source):
                await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        await self.delete(source)

    def local_path(self, key: str) -> Path | None:
        """A file the OS can sendfile from, where the backend has one."""
        return None

    async def presigned_url(self, key: str, expires_secs: int = 900) -> str | None:
        return None

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise StorageUnavailable when the backend cannot be used."""

    async def sweep_temp_files(self, older_than_secs: float = 3600.0) -> int:
        """Remove what crashed writers left behind; returns how many (none by default)."""
        return 0
