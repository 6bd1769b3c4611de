"""`scrub --verify`: hash every stored blob again; a blob whose bytes do not match its
digest (a bad disk, a hand edit) is corrupt. Hashing runs in threads (hashlib releases the
GIL), a few blobs at a time, reading in bounded chunks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from ...common.oci import Digest
from ...common.storage import RegistryStorage
from .inventory import Inventory

log = logging.getLogger(__name__)

HASHES_AT_ONCE = 4


def _file_hex(path: Path, algorithm: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, algorithm).hexdigest()
    except FileNotFoundError:
        return None


async def _stored_hex(storage: RegistryStorage, digest: Digest, size: int) -> str | None:
    """The hex digest of the stored bytes, None when they are gone."""
    path = storage.blob_path(digest)
    if path is not None:
        return await asyncio.to_thread(_file_hex, path, digest.algorithm)
    hasher = digest.hasher()
    try:
        async for chunk in storage.read_blob_range(digest, 0, size):
            hasher.update(chunk)
    except FileNotFoundError:
        return None
    return hasher.hexdigest()


async def corrupt_blobs(storage: RegistryStorage, inventory: Inventory) -> list[str]:
    """Digests of stored blobs whose bytes hash to something else."""
    slots = asyncio.Semaphore(HASHES_AT_ONCE)
    corrupt: list[str] = []

    async def check(text: str) -> None:
        digest = Digest.parse(text)
        async with slots:
            actual = await _stored_hex(storage, digest, inventory.blobs[text].size)
        if actual is not None and actual != digest.hex:
            log.error("corrupt blob %s: its bytes hash to %s:%s", text, digest.algorithm, actual)
            corrupt.append(text)

    await asyncio.gather(*(check(digest) for digest in inventory.blobs))
    return sorted(corrupt)
