"""The shared queue: Redis Streams with one consumer group of cachers.

Keys (all below `key_prefix`, built by `queue_key`):

* `{prefix}:jobs`        stream of waiting and in-progress jobs (field `job`: msgpack payload);
                         an entry is deleted once it is acked, retried or dead-lettered, so
                         XLEN counts only unfinished work
* `{prefix}:delayed`     sorted set of retry payloads scored by due time (unix seconds);
                         moved into the stream by whichever consumer reserves next
* `{prefix}:dead`        stream of given-up jobs: `job` (original payload), `reason`,
                         `failed_at`, `id`
* `{prefix}:lock:<key>`  short-lived locks (SET NX PX), valued with this instance's token
* `{prefix}:recent-tags:<name>`  sorted set of tags a frontend just served, scored by expiry:
                         listed at once by every frontend, before the cache job lands

Every payload is sealed with the configured `job_signing_key` (`jobs.JobSigner`): an entry
that does not verify is handed over without a job, and the cacher dead-letters it.

Delivery is at least once: an entry a consumer reserved but never finished (the cacher was
killed) is taken over by another consumer with XAUTOCLAIM once it has been pending for
`claim_timeout_secs`. Jobs are idempotent, so a duplicate costs a storage lookup.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ..config import RedisQueueSettings
from .base import DeadLetter, Delivery, JobQueue, QueuedJob, QueueUnavailable, fresh_attempt
from .jobs import CacheJob, JobRejected, JobSigner, UnsupportedJobVersion

log = logging.getLogger(__name__)

JOBS = "jobs"
DELAYED = "delayed"
DEAD = "dead"
LOCK = "lock"
RECENT_TAGS = "recent-tags"
GROUP = "cachers"
JOB_FIELD = b"job"

# Caps for MAXLEN ~ (approximate trimming is cheap). Acked entries are deleted, so the jobs
# stream only reaches this when no cacher has been consuming for a long time.
MAX_JOBS = 1_000_000
MAX_DEAD_LETTERS = 100_000
# Due retries moved into the stream per reserve() call.
PROMOTE_BATCH = 100


def queue_key(prefix: str, *parts: str) -> str:
    """The one place key names are built: `queue_key("sr", "lock", "fetch:sha256:..")`."""
    return ":".join((prefix, *parts))


# Read, move and remove due retries in one atomic step. With separate commands two consumers
# could both read the same due payloads and both XADD them (a duplicate for every retry), and
# removing first then adding would lose the job if the consumer died in between; MULTI cannot
# help because the XADDs depend on what ZRANGEBYSCORE returned.
_PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'job', payload)
end
if #due > 0 then
    redis.call('ZREM', KEYS[1], unpack(due))
end
return #due
"""

# Dead-letter with the payload exactly as it sits in the stream (it may be undecodable, so the
# caller cannot always re-pack it). An entry that is gone was finished by another consumer
# that claimed it meanwhile: nothing to record then.
_DEAD_LETTER = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    return 0
end
local fields = entry[1][2]
local payload = ''
for i = 1, #fields, 2 do
    if fields[i] == 'job' then
        payload = fields[i + 1]
    end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
    'job', payload, 'reason', ARGV[3], 'failed_at', ARGV[4], 'id', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# Extend the lock only while we still hold it (a lock that expired and was taken by another
# cacher must not be extended by us).
_REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@contextmanager
def _unavailable(operation: str) -> Iterator[None]:
    """Every Redis failure becomes QueueUnavailable: callers (the frontend's submitter, the
    cacher loop) treat the queue as down and carry on, they never crash on it."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
        raise QueueUnavailable(f"redis {operation}: {type(error).__name__}: {error}") from error
    except redis_errors.RedisError as error:  # OOM, READONLY, MISCONF, WRONGTYPE, ...
        raise QueueUnavailable(f"redis {operation} failed: {error}") from error


def _is_nogroup(error: redis_errors.ResponseError) -> bool:
    return str(error).startswith("NOGROUP")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisQueue(JobQueue):
    kind = "redis"
    shared = True

    # Registered with the client when it is created (EVALSHA, falling back to EVAL after a
    # Redis restart emptied the script cache).
    _promote_due: AsyncScript
    _dead_letter: AsyncScript
    _unlock: AsyncScript
    _refresh_lock: AsyncScript

    def __init__(
        self,
        settings: RedisQueueSettings,
        *,
        connect_timeout_secs: float = 2.0,
        socket_timeout_secs: float = 10.0,
        health_check_interval_secs: float = 15.0,
    ) -> None:
        self.settings = settings
        prefix = settings.key_prefix
        self.jobs_key = queue_key(prefix, JOBS)
        self.delayed_key = queue_key(prefix, DELAYED)
        self.dead_key = queue_key(prefix, DEAD)
        self._lock_prefix = queue_key(prefix, LOCK)
        self._connect_timeout = connect_timeout_secs
        self._socket_timeout = socket_timeout_secs
        self._health_check_interval = health_check_interval_secs
        # A blocking XREADGROUP must answer before the socket timeout fires.
        self._max_block_secs = max(0.0, socket_timeout_secs - 2.0)
        self._claim_min_idle_ms = max(1, int(settings.claim_timeout_secs * 1000))
        self._claim_cursor = "0-0"
        # Identifies this process's locks, so unlock() never deletes someone else's.
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._client: Redis | None = None
        key = settings.job_signing_key
        if key is None:
            # Only this process can then verify its jobs (a `server` without a configured
            # key); `frontend` and `cacher` refuse to start without one.
            log.info("no queue.redis job_signing_key: cache jobs signed with a random key")
            key = secrets.token_bytes(32)
        self.signer = JobSigner(key)

    # -- connection --------------------------------------------------------------------------

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            # No I/O here: connections are made on first use, so this works with Redis down.
            self._client = Redis.from_url(
                self.settings.url,
                protocol=2,  # pin the reply shapes parsed below
                decode_responses=False,
                socket_connect_timeout=self._connect_timeout,
                socket_timeout=self._socket_timeout,
                health_check_interval=self._health_check_interval,
                # One immediate retry on a connection error covers a pooled connection that
                # died with a Redis restart; no backoff loop, an outage must surface fast.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
                client_name="simple-registry",
            )
            self._promote_due = self._client.register_script(_PROMOTE_DUE)
            self._dead_letter = self._client.register_script(_DEAD_LETTER)
            self._unlock = self._client.register_script(_UNLOCK)
            self._refresh_lock = self._client.register_script(_REFRESH_LOCK)
        return self._client

    async def open(self) -> None:
        client = self._redis
        try:
            with _unavailable("open"):
                await self._create_group(client)
        except QueueUnavailable as error:
            # The frontend must start and serve while Redis is down; the group is created
            # again on the first NOGROUP.
            log.warning("redis queue not reachable at startup (%s); will retry on use", error)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _create_group(self, client: Redis) -> None:
        try:
            # From id 0: entries enqueued while the group did not exist (e.g. Redis restarted
            # without persistence, then the frontend enqueued) are delivered too.
            await client.xgroup_create(self.jobs_key, GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise

    async def ping(self) -> None:
        with _unavailable("ping"):
            await self._redis.ping()

    # -- producing ---------------------------------------------------------------------------

    async def enqueue(self, job: CacheJob) -> None:
        with _unavailable("enqueue"):
            await self._redis.xadd(
                self.jobs_key,
                {JOB_FIELD: self.signer.seal(job.pack())},
                maxlen=MAX_JOBS,
                approximate=True,
            )

    # -- consuming ---------------------------------------------------------------------------

    async def reserve(self, consumer: str, count: int, block_secs: float) -> list[Delivery]:
        count = max(1, count)
        client = self._redis
        with _unavailable("reserve"):
            await self._promote_due(
                keys=[self.delayed_key, self.jobs_key],
                args=[repr(time.time()), PROMOTE_BATCH, MAX_JOBS],
            )
            for attempt in range(2):
                try:
                    deliveries = await self._claim_stale(client, consumer, count)
                    if len(deliveries) < count:
                        # Do not keep claimed jobs waiting on a blocking read.
                        block = 0.0 if deliveries else block_secs
                        deliveries += await self._read_new(
                            client, consumer, count - len(deliveries), block
                        )
                    return deliveries
                except redis_errors.ResponseError as error:
                    if not _is_nogroup(error) or attempt:
                        raise
                    log.info("redis queue: consumer group missing, creating it")
                    await self._create_group(client)
        raise AssertionError("unreachable")

    async def _claim_stale(self, client: Redis, consumer: str, count: int) -> list[Delivery]:
        """Take over entries pending longer than the claim timeout (their consumer died or
        is stuck). The scan resumes where the last call stopped, so a long pending list is
        walked across calls instead of rescanning its head every time."""
        reply = await client.xautoclaim(
            self.jobs_key,
            GROUP,
            consumer,
            min_idle_time=self._claim_min_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        # reply[2] (Redis >= 7) lists ids whose entries were deleted while pending: Redis has
        # already dropped them from the pending list. Redis 6.2 instead returns them as entries
        # without fields, which we acknowledge ourselves.
        self._claim_cursor = _text(cursor)
        claimed: list[tuple[str, Mapping[bytes, bytes]]] = []
        deleted: list[str] = []
        for entry_id, fields in entries:
            if entry_id is None:
                continue
            if fields:
                claimed.append((_text(entry_id), fields))
            else:
                deleted.append(_text(entry_id))
        if deleted:
            await client.xack(self.jobs_key, GROUP, *deleted)
        if not claimed:
            return []
        times = await self._times_delivered(client, [entry_id for entry_id, _ in claimed])
        deliveries: list[Delivery] = []
        for entry_id, fields in claimed:
            delivered = times.get(entry_id, 0)
            log.info("redis queue: claimed stale job id=%s deliveries=%d", entry_id, delivered)
            if delivered > self.settings.max_attempts:
                # A job whose consumer dies every time (say it is OOM-killed) must not take
                # down every cacher in turn forever: hand it over for dead-lettering.
                deliveries.append(
                    Delivery(
                        entry_id,
                        None,
                        raw_error=(
                            f"delivered {delivered} times without being finished "
                            "(its consumers died or timed out)"
                        ),
                    )
                )
            else:
                deliveries.append(self._decode(entry_id, fields))
        return deliveries

    async def _times_delivered(self, client: Redis, ids: Sequence[str]) -> dict[str, int]:
        async with client.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.jobs_key, GROUP, min=entry_id, max=entry_id, count=1)
            replies: list[list[dict[str, Any]]] = await pipe.execute()
        return {
            _text(info["message_id"]): int(info["times_delivered"])
            for reply in replies
            for info in reply
        }

    async def _read_new(
        self, client: Redis, consumer: str, count: int, block_secs: float
    ) -> list[Delivery]:
        block_ms = int(min(block_secs, self._max_block_secs) * 1000)
        reply = await client.xreadgroup(
            GROUP,
            consumer,
            {self.jobs_key: ">"},
            count=count,
            block=block_ms if block_ms > 0 else None,  # BLOCK 0 would wait forever
        )
        deliveries: list[Delivery] = []
        for _stream, entries in cast(list[Any], reply or []):
            for entry_id, fields in entries:
                deliveries.append(self._decode(_text(entry_id), fields))
        return deliveries

    def _decode(self, entry_id: str, fields: Mapping[bytes, bytes]) -> Delivery:
        raw = fields.get(JOB_FIELD)
        if raw is None:
            return Delivery(entry_id, None, raw_error="stream entry has no 'job' field")
        try:
            return Delivery(entry_id, self.open_job(raw))
        except JobRejected as error:
            log.warning("redis queue: rejected job id=%s: %s", entry_id, error)
            return Delivery(entry_id, None, raw_error=str(error))
        except UnsupportedJobVersion as error:
            return Delivery(entry_id, None, raw_error=str(error))

    def open_job(self, raw: bytes) -> CacheJob:
        """A job from its sealed payload: the signature first, then the fields."""
        return CacheJob.unpack(self.signer.open(raw))

    # -- finishing ---------------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        with _unavailable("ack"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.jobs_key, GROUP, delivery.id)
                pipe.xdel(self.jobs_key, delivery.id)
                await pipe.execute()

    async def retry(self, delivery: Delivery, job: CacheJob, delay_secs: float) -> None:
        due = time.time() + max(0.0, delay_secs)
        with _unavailable("retry"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.delayed_key, {self.signer.seal(job.pack()): due})
                pipe.xack(self.jobs_key, GROUP, delivery.id)
                pipe.xdel(self.jobs_key, delivery.id)
                await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        client = self._redis
        with _unavailable("dead_letter"):
            recorded = await self._dead_letter(
                keys=[self.jobs_key, self.dead_key],
                args=[GROUP, delivery.id, reason, f"{time.time():.3f}", MAX_DEAD_LETTERS],
                client=client,
            )
        if not recorded:
            log.info(
                "redis queue: job id=%s already finished elsewhere, not dead-lettered", delivery.id
            )

    async def dead_letters(self, count: int = 100) -> list[tuple[CacheJob | None, str]]:
        """The oldest `count` dead letters: the job (None when undecodable) and the reason."""
        with _unavailable("dead_letters"):
            entries = await self._redis.xrange(self.dead_key, count=count)
        letters: list[tuple[CacheJob | None, str]] = []
        for _entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            job: CacheJob | None
            try:
                job = self.open_job(fields.get(JOB_FIELD, b""))
            except (JobRejected, UnsupportedJobVersion):
                job = None
            letters.append((job, _text(fields.get(b"reason", b""))))
        return letters

    async def depth(self) -> int:
        with _unavailable("depth"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xlen(self.jobs_key)
                pipe.zcard(self.delayed_key)
                waiting, delayed = await pipe.execute()
        return int(waiting) + int(delayed)

    # -- locks -------------------------------------------------------------------------------

    async def try_lock(self, key: str, ttl_secs: float) -> bool:
        ttl_ms = max(1, int(ttl_secs * 1000))
        with _unavailable("try_lock"):
            taken = await self._redis.set(
                queue_key(self._lock_prefix, key), self._token, nx=True, px=ttl_ms
            )
        return bool(taken)

    async def refresh_lock(self, key: str, ttl_secs: float) -> bool:
        ttl_ms = max(1, int(ttl_secs * 1000))
        with _unavailable("refresh_lock"):
            kept = await self._refresh_lock(
                keys=[queue_key(self._lock_prefix, key)],
                args=[self._token, ttl_ms],
                client=self._redis,
            )
        return bool(kept)

    async def unlock(self, key: str) -> None:
        """Release the lock if this instance holds it. Failures are only logged: the lock
        expires by itself, and raising here (typically from a `finally`) would hide the
        job's own outcome."""
        client = self._redis
        try:
            with _unavailable("unlock"):
                await self._unlock(
                    keys=[queue_key(self._lock_prefix, key)], args=[self._token], client=client
                )
        except QueueUnavailable as error:
            log.warning("could not release lock %s (it expires by itself): %s", key, error)

    # -- for operators (the web UI): dead letters and waiting jobs ---------------------------

    # -- shared between frontends ----------------------------------------------------------

    async def note_recent_tag(self, name: str, tag: str, ttl_secs: float) -> None:
        key = queue_key(self.settings.key_prefix, RECENT_TAGS, name)
        now = time.time()
        with _unavailable("note_recent_tag"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {tag: now + ttl_secs})
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.expire(key, max(1, int(ttl_secs) + 1))
                await pipe.execute()

    async def recent_tags(self, name: str) -> set[str]:
        key = queue_key(self.settings.key_prefix, RECENT_TAGS, name)
        with _unavailable("recent_tags"):
            members = await self._redis.zrangebyscore(key, time.time(), "+inf")
        return {_text(member) for member in cast(list[bytes], members)}

    async def dead_letter_page(self, count: int, after: str | None = None) -> list[DeadLetter]:
        """Entries of the dead-letter stream; a letter's id is its entry id there."""
        with _unavailable("dead_letter_page"):
            entries = await self._redis.xrange(
                self.dead_key, min=_after(after), max="+", count=max(1, count)
            )
        letters: list[DeadLetter] = []
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            letter_id = _text(entry_id)
            delivery = self._decode(letter_id, fields)
            try:
                failed_at = float(fields.get(b"failed_at", b"0"))
            except ValueError:
                failed_at = 0.0
            letters.append(
                DeadLetter(letter_id, delivery.job, _text(fields.get(b"reason", b"")), failed_at)
            )
        return letters

    async def dead_letter_count(self) -> int:
        with _unavailable("dead_letter_count"):
            return int(await self._redis.xlen(self.dead_key))

    async def retry_dead_letter(self, letter_id: str) -> CacheJob | None:
        """Enqueued before the letter is removed: a failure in between leaves the letter
        (and at worst one duplicate job, which costs a storage lookup), never loses it."""
        if not _STREAM_ID_RE.match(letter_id):
            return None
        with _unavailable("retry_dead_letter"):
            entries = await self._redis.xrange(self.dead_key, min=letter_id, max=letter_id)
        if not entries:
            return None
        _entry_id, fields = cast(list[tuple[bytes, dict[bytes, bytes]]], entries)[0]
        delivery = self._decode(letter_id, fields)
        if delivery.job is None:
            raise UnsupportedJobVersion(
                f"dead letter {letter_id} cannot be decoded: {delivery.raw_error}"
            )
        job = fresh_attempt(delivery.job)
        await self.enqueue(job)
        with _unavailable("retry_dead_letter"):
            await self._redis.xdel(self.dead_key, letter_id)
        return job

    async def queued_page(self, count: int, after: str | None = None) -> list[QueuedJob]:
        """Entries of the jobs stream (waiting or in progress; retries waiting for their
        due time sit in the delayed set and are not listed)."""
        with _unavailable("queued_page"):
            entries = await self._redis.xrange(
                self.jobs_key, min=_after(after), max="+", count=max(1, count)
            )
        jobs: list[QueuedJob] = []
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            delivery = self._decode(_text(entry_id), fields)
            jobs.append(QueuedJob(delivery.id, delivery.job))
        return jobs


_STREAM_ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def _after(entry_id: str | None) -> str:
    """XRANGE's exclusive start after `entry_id` (from the start without one; an id that is
    not a stream id starts past the end)."""
    if entry_id is None:
        return "-"
    return f"({entry_id}" if _STREAM_ID_RE.match(entry_id) else "+"
