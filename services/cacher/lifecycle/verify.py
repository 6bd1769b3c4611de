"""`scrub --verify`: hash every stored blob again; a blob whose bytes do not match its
digest (a bad disk, a hand edit) is corrupt. Hashing runs in threads (hashlib releases the
GIL), a few blobs at a time, reading in bounded chunks."""

from __future__ import annotations

import asyncio
import logging

from ...common.oci import Digest
from ...common.storage import RegistryStorage
from .inventory import Inventory

log = logging.getLogger(__name__)

HASHES_AT_ONCE = 4


async def corrupt_blobs(storage: RegistryStorage, inventory: Inventory) -> list[str]:
    """Digests of stored blobs whose bytes hash to something else."""
    slots = asyncio.Semaphore(HASHES_AT_ONCE)
    corrupt: list[str] = []

    async def check(text: str) -> None:
        digest = Digest.parse(text)
        async with slots:
            actual = await storage.stored_blob_hex(digest)
        if actual is not None and actual != digest.hex:
            log.error("corrupt blob %s: its bytes hash to %s:%s", text, digest.algorithm, actual)
            corrupt.append(text)

    await asyncio.gather(*(check(digest) for digest in inventory.blobs))
    return sorted(corrupt)
