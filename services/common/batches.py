"""Many awaited calls (storage requests: on S3 each is a round trip), a bounded number at
a time, so that neither one at a time nor all at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


async def in_batches(
    keys: Iterable[K], call: Callable[[K], Awaitable[V]], at_once: int
) -> dict[K, V]:
    """`call(key)` for every key, `at_once` at a time; the results by key."""
    pending = list(keys)
    results: dict[K, V] = {}
    for start in range(0, len(pending), at_once):
        batch = pending[start : start + at_once]
        answers = await asyncio.gather(*(call(key) for key in batch))
        results.update(zip(batch, answers, strict=True))
    return results
