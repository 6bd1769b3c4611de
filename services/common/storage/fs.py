"""Filesystem object store: keys are relative paths under `root_dir`.

Crash safety: every object is written to a temp file in the destination folder, flushed
(and fsynced when `sync_to_disk`), then renamed over its key; a failed write removes its
temp file, and a crash leaves at most a temp file, which listing skips and
`sweep_temp_files` removes. A temp file's name carries its writer's owner id
(`owners.py`, locks in `_staging/`), so the sweep at start-up removes exactly the temp
files of writers that are gone, however recent, and none of a live writer's.

Walks of the tree (the catalog, the sweep) run on a thread pool of their own, never on the
one that serves pulls (stat, open, read).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from . import owners
from .objects import ObjectInfo, ObjectStat, ObjectStore, ObjectWriter, StorageUnavailable
from .staging import STAGING_PREFIX

T = TypeVar("T")

# "~" appears in no tag, digest or name, so a temp file never looks like a key.
TEMP_MARKER = "~tmp~"
_WRITE_BUFFER = 1024 * 1024
_READ_CHUNK = 256 * 1024


# Tree walks (catalog pages, the temp-file sweep): two threads of their own.
_WALKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fs-walk")


async def _on_walker(function: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(_WALKERS, function, *args)


def _is_temp(name: str) -> bool:
    return TEMP_MARKER in name


def temp_owner(name: str) -> str | None:
    """The owner id in a temp file's name (None: a name from before owners, or not ours)."""
    _, _, suffix = name.partition(TEMP_MARKER)
    owner, _, _random = suffix.rpartition(".")
    return owner if owners.is_owner_name(owner) else None


class FsObjectWriter(ObjectWriter):
    def __init__(self, store: FsObjectStore, final: Path):
        self._store = store
        self._final = final
        self._temp = final.with_name(f"{final.name}{TEMP_MARKER}{store.owner}.{uuid.uuid4().hex}")
        self._file: BinaryIO | None = None
        self._buffer = bytearray()

    async def _ensure_open(self) -> BinaryIO:
        if self._file is None:
            self._file = await asyncio.to_thread(self._open)
        return self._file

    def _open(self) -> BinaryIO:
        self._final.parent.mkdir(parents=True, exist_ok=True)
        return open(self._temp, "xb")

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= _WRITE_BUFFER:
            await self._flush_buffer()

    async def _flush_buffer(self) -> None:
        file = await self._ensure_open()
        data = bytes(self._buffer)
        self._buffer.clear()
        await asyncio.to_thread(file.write, data)

    async def commit(self) -> None:
        try:
            await self._flush_buffer()
            file = await self._ensure_open()
            await asyncio.to_thread(self._finish, file)
        except BaseException:
            # A failed last write (a full disk) leaves nothing behind either.
            await self.abort()
            raise
        self._file = None

    def _finish(self, file: BinaryIO) -> None:
        file.flush()
        if self._store.sync_to_disk:
            os.fsync(file.fileno())
        file.close()
        os.replace(self._temp, self._final)
        if self._store.sync_to_disk:
            self._store.fsync_dir(self._final.parent)

    async def abort(self) -> None:
        self._buffer.clear()
        file, self._file = self._file, None
        await asyncio.to_thread(self._discard, file)

    def _discard(self, file: BinaryIO | None) -> None:
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        with contextlib.suppress(OSError):
            self._temp.unlink()


class FsObjectStore(ObjectStore):
    # A folder shared by several hosts (NFS, a ReadWriteMany volume) works too: every
    # publication is a rename within one folder.
    shared = True

    def __init__(self, root_dir: Path, sync_to_disk: bool = False):
        self.root = root_dir.resolve()
        self.sync_to_disk = sync_to_disk
        self._owner: tuple[int, str] | None = None

    @property
    def owners_folder(self) -> Path:
        """Where writers' owner locks live (the staging folder, beside the spools)."""
        return self.root / STAGING_PREFIX

    @property
    def owner(self) -> str:
        """This process's owner id, written into the names of its temp files (looked up
        once per process: a pre-forked worker has an owner of its own)."""
        pid = os.getpid()
        if self._owner is None or self._owner[0] != pid:
            self._owner = (pid, owners.owner_in(self.owners_folder).name)
        return self._owner[1]

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise StorageUnavailable(f"cannot create {self.root}: {error}") from error

    def path(self, key: str) -> Path:
        # Keys are built by layout.py from validated names and digests only; this check is
        # the last line of defence against a path leaving the root.
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"key outside storage root: {key!r}")
        return path

    async def stat(self, key: str) -> ObjectStat | None:
        try:
            st = await asyncio.to_thread(os.stat, self.path(key))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as error:
            raise StorageUnavailable(str(error)) from error
        return ObjectStat(size=st.st_size)

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self.path(key).read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as error:
            raise StorageUnavailable(str(error)) from error

    async def put(self, key: str, data: bytes) -> None:
        writer = await self.writer(key)
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def writer(self, key: str) -> ObjectWriter:
        return FsObjectWriter(self, self.path(key))

    async def list(self, prefix: str) -> AsyncIterator[str]:
        base = self.path(prefix)
        keys = await _on_walker(self._walk, base)
        for key in keys:
            yield key

    def _walk(self, base: Path) -> builtins.list[str]:
        keys: builtins.list[str] = []
        for folder, _dirs, files in os.walk(base):
            for name in files:
                if not _is_temp(name):
                    keys.append(str(Path(folder, name).relative_to(self.root)))
        return keys

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        base = self.path(prefix)
        found = await _on_walker(self._walk_info, base)
        for info in found:
            yield info

    def _walk_info(self, base: Path) -> builtins.list[ObjectInfo]:
        found: builtins.list[ObjectInfo] = []
        root = str(self.root) + os.sep
        for folder, _dirs, files in os.walk(base):
            for name in files:
                if _is_temp(name):
                    continue
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # deleted while walking
                # A rename (a staged blob committed) keeps mtime but sets ctime.
                modified = max(st.st_mtime, st.st_ctime)
                found.append(ObjectInfo(path.removeprefix(root), st.st_size, modified))
        return found

    async def folders(self, prefix: str) -> builtins.list[str]:
        """The sorted names of the folders directly below `prefix` (none when missing), read
        on the walkers' threads."""
        return await _on_walker(self._folders, self.path(prefix))

    @staticmethod
    def _folders(base: Path) -> builtins.list[str]:
        try:
            with os.scandir(base) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise StorageUnavailable(str(error)) from error

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(key).unlink)

    async def delete_many(self, keys: Sequence[str]) -> None:
        paths = [self.path(key) for key in keys]
        await asyncio.to_thread(self._unlink_all, paths)

    def _unlink_all(self, paths: builtins.list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(open, self.path(key), "rb")
        try:
            await asyncio.to_thread(file.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                size = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(file.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    async def promote(self, source: str, destination: str) -> None:
        await asyncio.to_thread(self._rename, self.path(source), self.path(destination))

    def _rename(self, source: Path, destination: Path) -> None:
        if self.sync_to_disk:
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
        if self.sync_to_disk:
            self.fsync_dir(destination.parent)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    async def ping(self) -> None:
        ok = await asyncio.to_thread(os.access, self.root, os.W_OK)
        if not ok:
            raise StorageUnavailable(f"{self.root} is not writable")

    def fsync_dir(self, folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def sweep_temp_files(self, older_than_secs: float = 3600.0) -> int:
        """Remove the temp files of writers that are gone; returns how many. A temp file
        whose name names no owner (an older version wrote it) goes once it is older than
        `older_than_secs`."""
        return await _on_walker(self._sweep, time.time() - older_than_secs)

    def _sweep(self, cutoff: float) -> int:
        removed = 0
        alive: dict[str, bool] = {}
        for folder, dirs, files in os.walk(self.root):
            if Path(folder) == self.root and STAGING_PREFIX in dirs:
                dirs.remove(STAGING_PREFIX)  # spools: their owners sweep them
            for name in files:
                if not _is_temp(name):
                    continue
                path = Path(folder, name)
                owner = temp_owner(name)
                with contextlib.suppress(OSError):
                    if owner is not None:
                        if owner not in alive:
                            alive[owner] = owners.alive(self.owners_folder, owner)
                        if alive[owner]:
                            continue
                    elif path.stat().st_mtime >= cutoff:
                        continue
                    path.unlink()
                    removed += 1
        return removed
