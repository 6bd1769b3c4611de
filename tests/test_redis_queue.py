"""RedisQueue against a real redis-server (one per test)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import pytest
from redis.asyncio import Redis
from simple_registry.common.config import RedisQueueSettings
from simple_registry.common.queue import CacheJob, Delivery, JobKind, QueueUnavailable
from simple_registry.common.queue.redis import DEAD, JOBS, RedisQueue, queue_key

if TYPE_CHECKING:
    from tests.fixtures.redis_server import RedisServer


T = TypeVar("T")
DIGEST = "sha256:" + "ab" * 32


def make_job(n: int = 0, **changes: Any) -> CacheJob:
    job = CacheJob(
        kind=JobKind.BLOB,
        repository="docker-io",
        remote_name="library/nginx",
        digest=f"sha256:{n:064x}",
    )
    return replace(job, **changes)


@asynccontextmanager
async def open_queue(server: RedisServer, **settings: Any) -> AsyncIterator[RedisQueue]:
    settings.setdefault("key_prefix", f"test-{uuid.uuid4().hex[:8]}")
    settings.setdefault("job_signing_key", b"test-redis-queue-signing-key")
    queue = RedisQueue(RedisQueueSettings(url=server.url, **settings))
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


@asynccontextmanager
async def raw_client(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url, protocol=2)
    try:
        yield client
    finally:
        await client.aclose()


async def eventually(
    attempt: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    deadline_s: float = 10.0,
) -> T:
    """Call `attempt` until `accept` holds for its result; fail after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        result = await attempt()
        if accept(result):
            return result
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline_s}s; last: {result!r}")
        await asyncio.sleep(0.05)  # the poll interval


async def reserve_one(queue: RedisQueue, consumer: str, block_secs: float = 0.1) -> Delivery:
    """The next delivery for `consumer`, polling until there is one (10 s at most)."""
    (delivery,) = await eventually(
        lambda: queue.reserve(consumer, 1, block_secs=block_secs), lambda got: len(got) == 1
    )
    return delivery


async def test_a_job_round_trips_with_all_fields_and_a_bytes_payload(
    redis_server: RedisServer,
) -> None:
    job = CacheJob(
        kind=JobKind.MANIFEST,
        repository="docker-io",
        remote_name="library/nginx",
        digest=DIGEST,
        size=1234,
        media_type="application/vnd.oci.image.index.v1+json",
        tag="1.27",
        data=b"\x00\x01\xff{binary}",
        attempt=2,
        enqueued_at=1700000000.25,
        last_error="upstream 503",
    )
    async with open_queue(redis_server) as queue:
        await queue.enqueue(job)
        deliveries = await queue.reserve("c1", 10, block_secs=1.0)
    assert len(deliveries) == 1
    assert deliveries[0].job == job
    assert deliveries[0].raw_error is None


async def test_ack_removes_the_job_so_depth_is_zero(redis_server: RedisServer) -> None:
    async with open_queue(redis_server) as queue:
        await queue.enqueue(make_job())
        assert await queue.depth() == 1
        (delivery,) = await queue.reserve("c1", 10, block_secs=1.0)
        assert await queue.depth() == 1  # in progress counts
        await queue.ack(delivery)
        assert await queue.depth() == 0
        assert await queue.reserve("c1", 10, block_secs=0) == []


async def test_reserve_waits_at_most_block_secs_when_the_queue_is_empty(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server) as queue:
        started = time.monotonic()
        assert await queue.reserve("c1", 5, block_secs=0.3) == []
        elapsed = time.monotonic() - started
    # Redis times the block in milliseconds; the upper bound leaves room for a busy machine
    # and still fails a reserve that waits far longer than asked (or forever).
    assert 0.29 <= elapsed < 3.0


async def test_a_job_that_is_never_acked_is_claimed_by_another_consumer_after_the_timeout(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server, claim_timeout_secs=1.0) as queue:
        await queue.enqueue(make_job(7))
        asked_at = time.monotonic()  # before the delivery: it is claimable 1 s after it
        (dying,) = await queue.reserve("dying-cacher", 1, block_secs=1.0)
        assert await queue.reserve("survivor", 1, block_secs=0) == []

        claimed = await reserve_one(queue, "survivor")
        assert time.monotonic() - asked_at >= 0.99
        assert claimed.id == dying.id
        assert claimed.job == dying.job
        await queue.ack(claimed)
        assert await queue.depth() == 0


async def test_a_claimed_entry_that_was_deleted_meanwhile_is_not_delivered(
    redis_server: RedisServer,
) -> None:
    async with (
        open_queue(redis_server, claim_timeout_secs=0.2) as queue,
        raw_client(redis_server) as client,
    ):
        await queue.enqueue(make_job(1))
        (delivery,) = await queue.reserve("dying-cacher", 1, block_secs=1.0)
        await client.xdel(queue.jobs_key, delivery.id)

        async def idle_ms() -> int:
            (entry,) = await client.xpending_range(queue.jobs_key, "cachers", "-", "+", 1)
            return int(entry["time_since_delivered"])

        await eventually(idle_ms, lambda idle: idle > 250)  # claimable now
        assert await queue.reserve("survivor", 5, block_secs=0) == []
        pending = await client.xpending(queue.jobs_key, "cachers")
        assert pending["pending"] == 0


async def test_a_job_whose_consumers_keep_dying_is_handed_over_for_dead_lettering(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server, claim_timeout_secs=0.1, max_attempts=2) as queue:
        job = make_job(3)
        await queue.enqueue(job)
        (first,) = await queue.reserve("c0", 1, block_secs=1.0)
        assert first.job == job
        # Deliveries 2 (claim) and 3 (claim): the second claim exceeds max_attempts.
        second = await reserve_one(queue, "c1", block_secs=0)
        assert second.job == job
        third = await reserve_one(queue, "c2", block_secs=0)
        assert third.id == first.id
        assert third.job is None
        assert third.raw_error is not None and "delivered 3 times" in third.raw_error
        await queue.dead_letter(third, third.raw_error)
        assert await queue.dead_letters() == [(job, third.raw_error)]
        assert await queue.depth() == 0


async def test_retry_makes_the_job_reappear_only_after_its_delay_with_the_next_attempt(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server) as queue:
        await queue.enqueue(make_job(2))
        (delivery,) = await queue.reserve("c1", 1, block_secs=1.0)
        assert delivery.job is not None
        retried_at = time.monotonic()
        await queue.retry(delivery, delivery.job.next_attempt("boom"), delay_secs=0.6)
        assert await queue.depth() == 1  # waiting in the delayed set
        assert await queue.reserve("c1", 1, block_secs=0) == []

        again = await reserve_one(queue, "c1")
        assert time.monotonic() - retried_at >= 0.59  # due 0.6 s after the retry was asked
        assert again.id != delivery.id
        assert again.job is not None
        assert again.job.attempt == 1
        assert again.job.last_error == "boom"
        assert again.job.digest == delivery.job.digest
        await queue.ack(again)
        assert await queue.depth() == 0


async def test_a_due_retry_is_delivered_to_exactly_one_consumer(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server) as queue:
        await queue.enqueue(make_job(4))
        (delivery,) = await queue.reserve("c1", 1, block_secs=1.0)
        assert delivery.job is not None
        await queue.retry(delivery, delivery.job.next_attempt("x"), delay_secs=0)
        results = await asyncio.gather(
            *(queue.reserve(f"c{i}", 5, block_secs=0.3) for i in range(8))
        )
        assert sum(len(got) for got in results) == 1


async def test_dead_letter_moves_the_job_to_the_dead_stream_with_the_reason(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server) as queue, raw_client(redis_server) as client:
        job = make_job(5, data=b"\x00payload")
        await queue.enqueue(job)
        (delivery,) = await queue.reserve("c1", 1, block_secs=1.0)
        await queue.dead_letter(delivery, "upstream said 404")

        assert await queue.depth() == 0
        assert await queue.dead_letters() == [(job, "upstream said 404")]
        dead_key = queue_key(queue.settings.key_prefix, DEAD)
        entries = await client.xrange(dead_key)
        assert entries is not None
        ((_, fields),) = entries
        assert fields is not None
        assert fields[b"job"] == queue.signer.seal(job.pack())
        assert fields[b"id"] == delivery.id.encode()
        assert abs(float(fields[b"failed_at"]) - time.time()) < 60
        assert await client.xpending(queue.jobs_key, "cachers") == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (msgpack.packb({"v": 99, "kind": "blob"}), "unsupported job version: 99"),
        (b"\xc1 not msgpack", "undecodable job payload"),
    ],
)
async def test_an_unknown_job_version_is_delivered_without_a_job_and_with_the_error(
    redis_server: RedisServer, payload: bytes, error: str
) -> None:
    async with open_queue(redis_server) as queue, raw_client(redis_server) as client:
        jobs_key = queue_key(queue.settings.key_prefix, JOBS)
        sealed = queue.signer.seal(payload)
        await client.xadd(jobs_key, {"job": sealed})
        (delivery,) = await queue.reserve("c1", 1, block_secs=1.0)
        assert delivery.job is None
        assert delivery.raw_error is not None and error in delivery.raw_error

        await queue.dead_letter(delivery, delivery.raw_error)
        assert await queue.dead_letters() == [(None, delivery.raw_error)]
        entries = await client.xrange(queue.dead_key)
        assert entries is not None
        ((_, fields),) = entries
        assert fields is not None
        assert fields[b"job"] == sealed  # the original bytes, for an operator
        assert await queue.depth() == 0


async def test_try_lock_is_exclusive_and_expires(redis_server: RedisServer) -> None:
    async with (
        open_queue(redis_server) as first,
        open_queue(redis_server, key_prefix=first.settings.key_prefix) as second,
    ):
        assert await first.try_lock("fetch:x", ttl_secs=0.5) is True
        assert await second.try_lock("fetch:x", ttl_secs=0.5) is False
        assert await first.try_lock("fetch:x", ttl_secs=0.5) is False
        assert await second.try_lock("fetch:other", ttl_secs=0.5) is True
        await eventually(lambda: second.try_lock("fetch:x", ttl_secs=5), lambda taken: taken)


async def test_unlock_by_a_non_owner_does_nothing(redis_server: RedisServer) -> None:
    async with (
        open_queue(redis_server) as owner,
        open_queue(redis_server, key_prefix=owner.settings.key_prefix) as other,
    ):
        assert await owner.try_lock("fetch:x", ttl_secs=30)
        await other.unlock("fetch:x")
        assert await other.try_lock("fetch:x", ttl_secs=30) is False
        await owner.unlock("fetch:x")
        assert await other.try_lock("fetch:x", ttl_secs=30) is True


async def test_enqueue_while_redis_is_stopped_fails_fast_and_works_after_a_restart(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server) as queue:
        await queue.enqueue(make_job(1))
        redis_server.stop()

        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            await queue.enqueue(make_job(2))
        assert time.monotonic() - started < 5.0  # no retry loop (a refused port is instant)
        with pytest.raises(QueueUnavailable):
            await queue.reserve("c1", 1, block_secs=0.1)
        with pytest.raises(QueueUnavailable):
            await queue.depth()
        with pytest.raises(QueueUnavailable):
            await queue.ping()
        await queue.unlock("fetch:x")  # only logs: the lock expires by itself

        redis_server.start()  # same port, empty: no persistence
        await queue.ping()
        await queue.enqueue(make_job(3))
        # The consumer group vanished with the data; reserve() creates it again.
        (delivery,) = await queue.reserve("c1", 5, block_secs=1.0)
        assert delivery.job is not None and delivery.job.digest == make_job(3).digest


async def test_a_queue_opened_while_redis_is_down_works_once_redis_is_up(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    async with open_queue(redis_server) as queue:  # open() must not raise
        with pytest.raises(QueueUnavailable):
            await queue.enqueue(make_job(1))
        redis_server.start()
        await queue.enqueue(make_job(2))
        (delivery,) = await queue.reserve("c1", 5, block_secs=1.0)
        assert delivery.job is not None and delivery.job.digest == make_job(2).digest


async def test_two_consumers_never_receive_the_same_job_concurrently(
    redis_server: RedisServer,
) -> None:
    async with open_queue(redis_server) as queue:
        for n in range(50):
            await queue.enqueue(make_job(n))
        received: dict[str, list[Delivery]] = {"a": [], "b": []}

        async def consume(consumer: str) -> None:
            while True:
                got = await queue.reserve(consumer, 3, block_secs=0.2)
                if not got:
                    return
                received[consumer].extend(got)

        await asyncio.gather(consume("a"), consume("b"))
        ids_a = {delivery.id for delivery in received["a"]}
        ids_b = {delivery.id for delivery in received["b"]}
        assert len(received["a"]) == len(ids_a) and len(received["b"]) == len(ids_b)
        assert ids_a & ids_b == set()
        assert len(ids_a | ids_b) == 50
        assert ids_a and ids_b  # both actually took part
        digests = {d.job.digest for d in received["a"] + received["b"] if d.job is not None}
        assert digests == {make_job(n).digest for n in range(50)}
