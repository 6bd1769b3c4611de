"""The queue interface shared by the in-process queue and Redis Streams."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from .jobs import CacheJob


class QueueUnavailable(Exception):
    """The queue cannot be reached; the job was not enqueued."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A job handed to one consumer; it stays pending until acked or retried."""

    id: str
    job: CacheJob | None  # None when the payload could not be decoded
    raw_error: str | None = None


class JobQueue(abc.ABC):
    kind: str = "abstract"
    shared: bool = False

    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def enqueue(self, job: CacheJob) -> None:
        """Add a job; raises QueueUnavailable when it could not be added."""

    @abc.abstractmethod
    async def reserve(self, consumer: str, count: int, block_secs: float) -> list[Delivery]:
        """Up to `count` jobs for this consumer, waiting at most `block_secs` for one."""

    @abc.abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """The job is done (its content is committed, or it was already stored)."""

    @abc.abstractmethod
    async def retry(self, delivery: Delivery, job: CacheJob, delay_secs: float) -> None:
        """Run the job again later (`job` carries the incremented attempt)."""

    @abc.abstractmethod
    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Give up on the job, keeping it and the reason for an operator."""

    @abc.abstractmethod
    async def dead_letters(self, count: int = 100) -> list[tuple[CacheJob | None, str]]:
        """The oldest `count` dead letters: the job (None when undecodable) and the reason."""

    @abc.abstractmethod
    async def depth(self) -> int:
        """Jobs waiting or in progress."""

    async def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise QueueUnavailable when the queue cannot be used."""

    async def try_lock(self, key: str, ttl_secs: float) -> bool:
        """Take a short-lived lock (one fetch per digest at a time); True when taken."""
        return True

    async def refresh_lock(self, key: str, ttl_secs: float) -> bool:
        """Keep holding a lock taken with `try_lock`; False when it was lost."""
        return True

    async def unlock(self, key: str) -> None:  # noqa: B027 - optional hook
        pass
