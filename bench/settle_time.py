"""Time from the end of a cold pull of a large image to "all of it cached", split mode
(one frontend, one cacher, redis-server), on fs and on S3 (moto's server).

    .venv/bin/python -m bench.settle_time [--size-mib 100]

On fs the frontend stages the bytes it streams and the cacher commits them by a rename
after verifying them; on S3 the cacher fetches the blob again and uploads it (multipart).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fixtures.distribution import Distribution
from tests.fixtures.mirror import Mirror, mirror_config, upstream_entry
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import free_port
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.s3_server import S3Server
from tests.fixtures.skopeo import skopeo_copy


def run(
    label: str,
    storage: dict[str, Any],
    stored: Any,
    work: Path,
    upstream: Distribution,
    redis: RedisServer,
    image: Any,
) -> tuple[float, float]:
    repositories = {"hub": {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}
    processes = []
    for command in ("frontend", "cacher"):
        config = mirror_config(work, repositories, port=free_port())
        config["blob_store"] = storage
        config["queue"] = {"redis": {"url": redis.url, "key_prefix": label}}
        config["cacher"] = {"metrics_port": free_port(), "metrics_bind_address": "127.0.0.1"}
        processes.append(Mirror(work, config, command).start())
    frontend = processes[0]
    try:
        started = time.perf_counter()
        skopeo_copy(
            f"{frontend.host_port}/hub/{image.name}:{image.tag}", work / "out", timeout_s=600
        )
        pulled = time.perf_counter()
        wanted = {image.digest, *image.blob_digests}
        while not wanted <= stored():
            time.sleep(0.02)  # polling the measured quantity
        return pulled - started, time.perf_counter() - pulled
    finally:
        for process in processes:
            process.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-settle-"))
    upstream = Distribution(work / "upstream").start()
    redis = RedisServer(work / "redis").start()
    s3 = S3Server(work / "moto").start()
    try:
        image = pusher_for(upstream, work / "cache").large_image(
            "bench/large", "1.0", size_mib=args.size_mib
        )
        fs_root = work / "fs"

        def fs_stored() -> set[str]:
            return {f"sha256:{p.name}" for p in (fs_root / "blobs").glob("*/*/*")}

        bucket = s3.create_bucket("bench-settle")

        def s3_stored() -> set[str]:
            return {
                "sha256:" + k.rsplit("/", 1)[1]
                for k in s3.object_names(bucket)
                if k.startswith("blobs/")
            }

        s3_storage = s3.blob_store_table(bucket)
        fs = run(
            "fs",
            {"fs": {"root_dir": str(fs_root)}},
            fs_stored,
            work / "fs-run",
            upstream,
            redis,
            image,
        )
        s3_run = run("s3", s3_storage, s3_stored, work / "s3-run", upstream, redis, image)
        print(f"cold pull of a {args.size_mib} MiB image, split mode (1 frontend, 1 cacher, redis)")
        print(f"fs : pull {fs[0]:6.2f} s, then all cached after {fs[1]:6.2f} s")
        print(
            f"s3 : pull {s3_run[0]:6.2f} s, then all cached after {s3_run[1]:6.2f} s  (moto on the same cores)"
        )
    finally:
        s3.stop()
        redis.stop()
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
