"""Who left a file behind: per-process owner ids, kept alive by a lock.

A process that writes temporary files (temp files of an object write, spools of blob
downloads) claims an owner id in a folder: it creates `<folder>/<owner>.lock` and holds an
exclusive `flock` on it for its whole life. The kernel drops the lock when the process
ends, however it ends (`kill -9` included). Its files carry the owner id in their names, so
any process — the restarted one, or another one sharing the folder — can tell a dead
writer's leftovers (its lock is free, or gone) from a live writer's files (its lock is
held) and remove only the former. This works across hosts sharing a folder as far as the
file system's locks do (local file systems, NFSv4).

One owner per process and folder (`owner_in`): a forked worker claims its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

LOCK_SUFFIX = ".lock"
_OWNER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


def _host() -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")
    return host[:40] or "host"


def is_owner_name(text: str) -> bool:
    return bool(_OWNER_RE.match(text))


@dataclass(frozen=True, slots=True)
class Owner:
    name: str  # e.g. "web-1-4711-9f3c2a1b": host, pid, random
    folder: Path
    fd: int  # holds the flock; closed only when the process ends


_owners: dict[tuple[int, Path], Owner] = {}
_claiming = threading.Lock()


def owner_in(folder: Path) -> Owner:
    """This process's owner id in `folder`, claimed on first use."""
    folder = folder.resolve()
    key = (os.getpid(), folder)
    with _claiming:
        owner = _owners.get(key)
        if owner is None:
            owner = _owners[key] = _claim(folder)
        return owner


def _claim(folder: Path) -> Owner:
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        name = f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
        path = folder / f"{name}{LOCK_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A sweeper may have found the file unlocked between open and flock and removed
            # it: then this lock protects nothing, and we claim another name.
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return Owner(name, folder, fd)
        except OSError:
            pass
        os.close(fd)


def alive(folder: Path, owner: str) -> bool:
    """Is the process that claimed `owner` in `folder` still running?"""
    path = folder / f"{owner}{LOCK_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return False


def dead_owners(folder: Path) -> list[str]:
    """Owners whose lock file in `folder` nobody holds; their lock files are removed."""
    dead: list[str] = []
    if not folder.is_dir():
        return dead
    for entry in os.scandir(folder):
        if not entry.name.endswith(LOCK_SUFFIX):
            continue
        name = entry.name.removesuffix(LOCK_SUFFIX)
        if is_owner_name(name) and not alive(folder, name):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            dead.append(name)
    return dead
