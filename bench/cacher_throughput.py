"""Jobs per second one cacher process handles for small manifests, on fs and on S3.

    .venv/bin/python -m bench.cacher_throughput [--jobs 2000]

Enqueues N distinct manifest jobs (inline bytes, like the frontend's) into a real
redis-server, starts one `simple-registry cacher` (max_concurrent_cache_jobs = 8), and
times until every manifest is committed (the Redis stream is empty and the pending list
too). The S3 run uses moto's server, which is itself a Python process on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_py
from simple_registry.common.config import RedisQueueSettings
from simple_registry.common.oci import MEDIA_OCI_MANIFEST, Digest
from simple_registry.common.queue.jobs import CacheJob, JobKind
from simple_registry.common.queue.redis import RedisQueue

from tests.fixtures.mirror import Mirror, mirror_config
from tests.fixtures.ports import free_port
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.s3_server import S3Server


def manifest(index: int) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "annotations": {"n": str(index)}}
    ).encode()


async def enqueue(url: str, count: int) -> None:
    queue = RedisQueue(RedisQueueSettings(url=url))
    await queue.open()
    for index in range(count):
        data = manifest(index)
        await queue.enqueue(
            CacheJob(
                kind=JobKind.MANIFEST,
                repository="hub",
                remote_name="bench/app",
                digest=str(Digest.of_bytes(data)),
                size=len(data),
                media_type=MEDIA_OCI_MANIFEST,
                tag=f"t{index}",
                data=data,
            )
        )
    await queue.close()


def run(storage: dict[str, Any], work: Path, redis: RedisServer, jobs: int) -> float:
    redis_py.Redis.from_url(redis.url).flushall()
    asyncio.run(enqueue(redis.url, jobs))
    config = mirror_config(
        work,
        {"hub": {"upstream": [{"url": "http://127.0.0.1:9"}]}},
        port=free_port(),
        global_={"max_concurrent_cache_jobs": 8},
    )
    config["blob_store"] = storage
    config["queue"] = {"redis": {"url": redis.url}}
    config["cacher"] = {"metrics_port": free_port(), "metrics_bind_address": "127.0.0.1"}
    client = redis_py.Redis.from_url(redis.url)
    started = time.perf_counter()
    cacher = Mirror(work, config, "cacher").start()
    try:
        while client.xlen("simple-registry:jobs") > 0:
            time.sleep(0.01)  # polling the measured quantity, not synchronising a test
        return time.perf_counter() - started
    finally:
        cacher.stop()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cacher-"))
    redis = RedisServer(work / "redis").start()
    s3 = S3Server(work / "moto").start()
    try:
        fs_secs = run({"fs": {"root_dir": str(work / "fs")}}, work / "fs-run", redis, args.jobs)
        bucket = s3.create_bucket("bench-cacher")
        s3_storage = s3.blob_store_table(bucket)
        s3_secs = run(s3_storage, work / "s3-run", redis, args.jobs)
        print(
            f"{args.jobs} manifest jobs, one cacher, max_concurrent_cache_jobs=8 (includes start-up)"
        )
        print(f"fs : {fs_secs:6.2f} s  {args.jobs / fs_secs:7.0f} jobs/s")
        print(f"s3 : {s3_secs:6.2f} s  {args.jobs / s3_secs:7.0f} jobs/s  (moto on the same cores)")
    finally:
        s3.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
