"""Jobs per second one cacher process handles for small manifests, on fs and on S3.

    .venv/bin/python -m bench.cacher_throughput [--jobs 2000] [--storages fs,moto,localbucket]
        [--profile]

Enqueues N distinct manifest jobs (inline bytes, signed like the frontend's) into a real
redis-server, starts one `simple-registry cacher` (max_concurrent_cache_jobs = 8), and
times until every manifest is committed (the Redis stream is empty). S3 runs against
moto's server (what the tests use) and, when installed (`pip install localbucket`, a small
stdlib-only S3 server that keeps objects as files), against LocalBucket: both are Python
processes on the same 2 cores, so the CPU seconds of the cacher, the S3 server and
redis-server during the run (`/proc/PID/stat`) say who spends the time; per job, in ms.
With --profile, py-spy samples the cacher during each run and the busiest frames are
printed (`bench.profile_cold`'s summary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_py
from simple_registry.common.config import RedisQueueSettings
from simple_registry.common.oci import MEDIA_OCI_MANIFEST, Digest
from simple_registry.common.queue.jobs import CacheJob, JobKind
from simple_registry.common.queue.redis import RedisQueue

from bench.harness import cpu_seconds, print_table, which
from bench.profile_cold import py_spy, stop, summarize
from tests.fixtures.job_key import TEST_JOB_KEY
from tests.fixtures.mirror import Mirror, mirror_config
from tests.fixtures.ports import free_port, wait_for_http
from tests.fixtures.process import ManagedProcess
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.s3_server import S3Server

PROFILE_RATE = 200


class LocalBucketServer(S3Server):
    """`localbucket DATA_ROOT` instead of moto: the same endpoint, objects as files."""

    def _spawn_and_wait(self, port: int) -> None:
        assert self._log_dir is not None
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._log_dir / f"localbucket-{port}.log"
        data = str(self._log_dir / "data")
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in _terminate()
        self._process = subprocess.Popen(
            [localbucket_binary() or "localbucket", "--host", self.host, "--port", str(port), data],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_for_http(
            f"{self.endpoint}/", self._deadline_s, log_path=self.log_path, process=self._process
        )


def pid_of(server: ManagedProcess) -> int:
    """The process id of a fixture's server (its `ManagedProcess` keeps the Popen)."""
    process = server._process
    assert process is not None
    return process.pid


def localbucket_binary() -> str | None:
    beside = Path(sys.executable).parent / "localbucket"
    return str(beside) if beside.exists() else which("localbucket")


def manifest(index: int) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "annotations": {"n": str(index)}}
    ).encode()


async def enqueue(url: str, count: int) -> None:
    queue = RedisQueue(RedisQueueSettings(url=url, job_signing_key=TEST_JOB_KEY))
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


def run(
    storage: dict[str, Any],
    work: Path,
    redis: RedisServer,
    jobs: int,
    s3: S3Server | None,
    profile: bool,
) -> dict[str, Any]:
    redis_py.Redis.from_url(redis.url).flushall()
    asyncio.run(enqueue(redis.url, jobs))
    config = mirror_config(
        work,
        {"hub": {"upstream": [{"url": "http://127.0.0.1:9"}]}},
        port=free_port(),
        global_={"max_concurrent_cache_jobs": 8},
    )
    config["blob_store"] = storage
    config["queue"] = {"redis": {"url": redis.url, "job_signing_key": TEST_JOB_KEY.decode()}}
    config["cacher"] = {"metrics_port": free_port(), "metrics_bind_address": "127.0.0.1"}
    client = redis_py.Redis.from_url(redis.url)
    others = {"redis": pid_of(redis)}
    if s3 is not None:
        others["s3 server"] = pid_of(s3)
    before = {name: cpu_seconds([pid]) for name, pid in others.items()}
    started = time.perf_counter()
    cacher = Mirror(work, config, "cacher").start()
    spy = None
    raw = work / "py-spy.txt"
    try:
        assert cacher.process is not None
        pid = cacher.process.pid
        if profile:
            spy = py_spy(pid, PROFILE_RATE, raw)
        while client.xlen("simple-registry:jobs") > 0:
            time.sleep(0.01)  # polling the measured quantity, not synchronising a test
        seconds = time.perf_counter() - started
        cpu = {"cacher": cpu_seconds([pid])}
        cpu.update({name: cpu_seconds([p]) - before[name] for name, p in others.items()})
    finally:
        if spy is not None:
            stop(spy)
        cacher.stop()
        client.close()
    summary = summarize(raw.read_text(), 12, seconds, PROFILE_RATE) if spy else ""
    return {"seconds": seconds, "cpu": cpu, "profile": summary}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--storages", default="fs,moto,localbucket")
    parser.add_argument("--profile", action="store_true", help="py-spy the cacher")
    args = parser.parse_args()
    storages = args.storages.split(",")
    if "localbucket" in storages and localbucket_binary() is None:
        print("localbucket is not installed (pip install localbucket): S3 on moto only")
        storages.remove("localbucket")
    work = Path(tempfile.mkdtemp(prefix="bench-cacher-"))
    redis = RedisServer(work / "redis").start()
    results: dict[str, dict[str, Any]] = {}
    try:
        for storage in storages:
            if storage == "fs":
                table = {"fs": {"root_dir": str(work / "fs")}}
                results[storage] = run(table, work / "fs-run", redis, args.jobs, None, args.profile)
                continue
            server_class = LocalBucketServer if storage == "localbucket" else S3Server
            s3 = server_class(work / storage).start()
            try:
                table = s3.blob_store_table(s3.create_bucket("bench-cacher"))
                results[storage] = run(
                    table, work / f"{storage}-run", redis, args.jobs, s3, args.profile
                )
            finally:
                s3.stop()
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.jobs} manifest jobs, one cacher, max_concurrent_cache_jobs=8 (includes start-up)")
    rows = []
    for storage, result in results.items():
        cpu = result["cpu"]
        rows.append(
            [
                "fs" if storage == "fs" else f"S3 ({storage})",
                f"{result['seconds']:.2f}",
                f"{args.jobs / result['seconds']:.0f}",
                f"{cpu['cacher'] / args.jobs * 1000:.2f}",
                f"{cpu['s3 server'] / args.jobs * 1000:.2f}" if "s3 server" in cpu else "-",
                f"{cpu['redis'] / args.jobs * 1000:.2f}",
            ]
        )
    print_table(
        ["storage", "seconds", "jobs/s", "cacher CPU ms/job", "S3 server CPU ms/job", "redis"],
        rows,
    )
    for storage, result in results.items():
        if result["profile"]:
            print(f"\n{storage}: py-spy of the cacher\n{result['profile']}")


if __name__ == "__main__":
    main()
