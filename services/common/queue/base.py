"""The queue interface shared by the in-process queue and Redis Streams."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, replace

from .jobs import CacheJob


class QueueUnavailable(Exception):
    """The queue cannot be reached; the job was not enqueued."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job a cacher gave up on, as an operator sees it (the web UI, `retry_dead_letter`)."""

    id: str  # unique among the queue's dead letters
    job: CacheJob | None  # None when the payload could not be decoded
    reason: str
    failed_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job waiting or in progress, as an operator sees it."""

    id: str
    job: CacheJob | None


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

    # -- shared between frontends: tags just served, before their cache jobs land -----------

    async def note_recent_tag(self, name: str, tag: str, ttl_secs: float) -> None:
        """Remember that `tag` of `name` was just served (in this process by default)."""
        recent: dict[tuple[str, str], float] = self.__dict__.setdefault("_recent_tags", {})
        now = time.monotonic()
        if len(recent) > 10_000:
            for key in [k for k, expiry in recent.items() if expiry <= now]:
                del recent[key]
        recent[(name, tag)] = now + ttl_secs

    async def recent_tags(self, name: str) -> set[str]:
        recent: dict[tuple[str, str], float] = self.__dict__.get("_recent_tags", {})
        now = time.monotonic()
        return {tag for (owner, tag), expiry in recent.items() if owner == name and expiry > now}

    # -- for operators (the web UI): dead letters and waiting jobs, oldest first ------------

    @abc.abstractmethod
    async def dead_letter_page(self, count: int, after: str | None = None) -> list[DeadLetter]:
        """Up to `count` dead letters, oldest first, starting after the letter `after`."""

    @abc.abstractmethod
    async def dead_letter_count(self) -> int: ...

    @abc.abstractmethod
    async def retry_dead_letter(self, letter_id: str) -> CacheJob | None:
        """Enqueue a dead letter's job again, its attempts from zero, then remove the letter;
        the job, or None when there is no such letter. Raises UnsupportedJobVersion for a
        letter whose payload cannot be decoded (it cannot run again)."""

    @abc.abstractmethod
    async def queued_page(self, count: int, after: str | None = None) -> list[QueuedJob]:
        """Up to `count` jobs waiting or in progress, oldest first, after the job `after`."""


def fresh_attempt(job: CacheJob) -> CacheJob:
    """A dead letter's job, run again from its first attempt (the rest is unchanged: the
    time it was enqueued still orders its tag against newer observations)."""
    return replace(job, attempt=0, last_error=None)
