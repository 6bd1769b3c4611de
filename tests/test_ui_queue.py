"""What the web UI asks of the job queue — dead letters with their ids, reasons and times,
retrying one by id, the waiting jobs — on the in-process queue and on a real redis-server,
the same behaviour from both."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis
from simple_registry.common.config import RedisQueueSettings
from simple_registry.common.queue import (
    CacheJob,
    Delivery,
    JobKind,
    JobQueue,
    UnsupportedJobVersion,
)
from simple_registry.common.queue.memory import MemoryQueue
from simple_registry.common.queue.redis import RedisQueue

from tests.fixtures.redis_server import RedisServer


def job(n: int) -> CacheJob:
    return CacheJob(
        kind=JobKind.BLOB,
        repository="hub",
        remote_name="library/nginx",
        digest=f"sha256:{n:064x}",
        tag=None,
        enqueued_at=1000.0 + n,
    )


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def open_queue(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[JobQueue]:
    queue: JobQueue
    if kind == "memory":
        queue = MemoryQueue()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        queue = RedisQueue(
            RedisQueueSettings(
                url=server.url,
                key_prefix=f"ui-{uuid.uuid4().hex[:8]}",
                job_signing_key=b"ui-queue-test-signing-key",
            )
        )
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


async def fail(queue: JobQueue, attempts: int, reason: str) -> None:
    """Run the next job `attempts` times, failing each, as a cacher does: retried with the
    next attempt, then dead-lettered."""
    for attempt in range(attempts):
        deliveries: list[Delivery] = []
        deadline = time.monotonic() + 10
        while not deliveries and time.monotonic() < deadline:
            deliveries = await queue.reserve("cacher", 1, block_secs=0.2)
        (delivery,) = deliveries
        assert delivery.job is not None and delivery.job.attempt == attempt
        if attempt + 1 < attempts:
            await queue.retry(delivery, delivery.job.next_attempt(reason), delay_secs=0)
        else:
            await queue.dead_letter(delivery, reason)


async def test_dead_letters_are_listed_oldest_first_with_their_reason_and_time(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_queue(kind, request) as queue:
        before = time.time()
        for n in range(3):
            await queue.enqueue(job(n))
            await fail(queue, 5, f"upstream said 404 ({n})")
        letters = await queue.dead_letter_page(10)
        assert [letter.reason for letter in letters] == [
            f"upstream said 404 ({n})" for n in range(3)
        ]
        assert [letter.job.digest for letter in letters if letter.job] == [
            job(n).digest for n in range(3)
        ]
        assert all(before - 1 <= letter.failed_at <= time.time() + 1 for letter in letters)
        assert len({letter.id for letter in letters}) == 3
        assert await queue.dead_letter_count() == 3
        first, rest = (
            await queue.dead_letter_page(1),
            await queue.dead_letter_page(10, letters[0].id),
        )
        assert first == letters[:1] and rest == letters[1:]
        assert await queue.dead_letter_page(10, letters[-1].id) == []
        assert await queue.dead_letter_page(10, "not-an-id") == []


async def test_retrying_a_dead_letter_queues_its_job_from_the_first_attempt_and_removes_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_queue(kind, request) as queue:
        await queue.enqueue(job(7))
        await fail(queue, 5, "boom")
        (letter,) = await queue.dead_letter_page(10)
        assert letter.job is not None and letter.job.attempt == 4
        retried = await queue.retry_dead_letter(letter.id)
        assert retried is not None
        assert (retried.attempt, retried.last_error, retried.digest) == (0, None, job(7).digest)
        assert retried.enqueued_at == job(7).enqueued_at  # still ordered by when it was seen
        assert await queue.dead_letter_page(10) == []
        assert await queue.dead_letter_count() == 0
        (queued,) = await queue.queued_page(10)
        assert queued.job == retried
        (delivery,) = await queue.reserve("cacher", 1, block_secs=1.0)
        assert delivery.job == retried
        assert await queue.retry_dead_letter(letter.id) is None  # gone: nothing to retry


async def test_retrying_a_dead_letter_that_does_not_exist_changes_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_queue(kind, request) as queue:
        await queue.enqueue(job(1))
        await fail(queue, 1, "x")
        for key in ("0-0", "999999999999-0", "12", "bogus"):
            assert await queue.retry_dead_letter(key) is None
        assert await queue.dead_letter_count() == 1
        assert await queue.depth() == 0


async def test_the_waiting_jobs_are_listed_oldest_first_and_paged(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_queue(kind, request) as queue:
        for n in range(4):
            await queue.enqueue(job(n))
        (reserved,) = await queue.reserve("cacher", 1, block_secs=1.0)  # in progress: listed
        everything = await queue.queued_page(10)
        assert [q.job.digest for q in everything if q.job] == [job(n).digest for n in range(4)]
        assert everything[0].id == reserved.id
        page = await queue.queued_page(2)
        assert page == everything[:2]
        assert await queue.queued_page(2, page[-1].id) == everything[2:]
        await queue.ack(reserved)
        assert [q.id for q in await queue.queued_page(10)] == [q.id for q in everything[1:]]


async def test_a_dead_letter_that_cannot_be_decoded_is_listed_but_not_retried(
    request: pytest.FixtureRequest,
) -> None:
    async with open_queue("redis", request) as queue:
        assert isinstance(queue, RedisQueue)
        client = Redis.from_url(request.getfixturevalue("redis_server").url, protocol=2)
        try:
            await client.xadd(
                queue.dead_key,
                {
                    "job": b"\xc1 garbage",
                    "reason": "undecodable job",
                    "failed_at": "5.0",
                    "id": "1-0",
                },
            )
        finally:
            await client.aclose()
        (letter,) = await queue.dead_letter_page(10)
        assert (letter.job, letter.reason, letter.failed_at) == (None, "undecodable job", 5.0)
        with pytest.raises(UnsupportedJobVersion):
            await queue.retry_dead_letter(letter.id)
        assert await queue.dead_letter_count() == 1
