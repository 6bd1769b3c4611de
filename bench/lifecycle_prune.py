"""Prune and scrub of 10,000 cached manifests: time and peak memory, fs and S3 (moto).

    .venv/bin/python -m bench.lifecycle_prune [--manifests 10000] [--storage fs s3]

Storage is seeded the way cachers store images — per image a layer, a config and a
manifest (bytes), its manifest record, tag, layer links and pull time — over 100
repositories. Then each command runs as its own process, as an operator runs it, and is
timed with its peak RSS (wait4):

- `prune --dry-run`: survey and plan only (a budget of half the usage: half the images go);
- `prune`: the same, carried out (tags, manifests, then the released blobs: grace 0);
- `scrub`: garbage collection over what is left;
- `scrub --verify`: every blob hashed again.

Every deleting command includes the invalidation wait (6 s) before its first delete.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import tomli_w
from simple_registry.common.oci import Tag
from simple_registry.common.storage import RegistryStorage
from simple_registry.common.storage.fs import FsObjectStore
from simple_registry.common.storage.objects import ObjectStore
from simple_registry.common.storage.s3 import S3ObjectStore

from bench.harness import Bench, machine_line, print_table
from tests.fixtures.lifecycle import seed_manifest
from tests.fixtures.mirror import REGISTRY_COMMAND
from tests.fixtures.s3_server import S3Server

REPOSITORIES = 100
SEED_AT_ONCE = 64
COMMANDS = [
    ("prune --dry-run", ["prune", "--dry-run"]),
    ("prune", ["prune"]),
    ("scrub", ["scrub"]),
    ("scrub --verify", ["scrub", "--verify"]),
]


async def seed(objects: ObjectStore, count: int) -> int:
    """`count` images; the bytes of committed content."""
    await objects.open()
    storage = RegistryStorage(objects)
    now = time.time()
    total = 0
    try:

        async def one(index: int) -> int:
            name = f"docker-io/bench/r{index % REPOSITORIES}"
            layer = f"layer {index} ".encode() * 50
            image = await seed_manifest(
                storage, name, [layer], tag=f"t{index}", updated_at=now - 86400 + index
            )
            await storage.put_pull_time(name, Tag(f"t{index}"), now - 3600 + index)
            return image.bytes

        for start in range(0, count, SEED_AT_ONCE):
            sizes = await asyncio.gather(
                *(one(i) for i in range(start, min(start + SEED_AT_ONCE, count)))
            )
            total += sum(sizes)
    finally:
        await objects.close()
    return total


def run(config: Path, args: list[str]) -> tuple[float, float, str]:
    """Seconds, peak RSS in MiB and the summary line of one command."""
    started = time.monotonic()
    with open(config.with_suffix(".out"), "w+") as out:
        process = subprocess.Popen(
            [*REGISTRY_COMMAND, "--log-level", "warning", "-c", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        out.seek(0)
        lines = out.read().splitlines()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n" + "\n".join(lines[-20:]))
    summary = next((line for line in reversed(lines) if line.startswith(("prune:", "scrub:"))), "")
    return seconds, usage.ru_maxrss / 1024, summary


def config_for(path: Path, blob_store: dict[str, Any], max_size: int) -> Path:
    config = {
        "server": {"bind_address": "127.0.0.1"},
        "global": {"update_pull_time": True, "access_policy": {"default": "allow"}},
        "blob_store": blob_store,
        "eviction": {"max_size": max_size, "blob_grace_secs": 0, "interval_secs": 0},
        "repository": {"docker-io": {"upstream": [{"url": "https://registry-1.docker.io"}]}},
    }
    path.write_text(tomli_w.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifests", type=int, default=10_000)
    parser.add_argument("--storage", nargs="+", default=["fs", "s3"], choices=["fs", "s3"])
    args = parser.parse_args()
    rows = []
    with Bench("lifecycle-prune") as bench:
        for kind in args.storage:
            if kind == "fs":
                root = bench.path("fs")
                objects: ObjectStore = FsObjectStore(root)
                blob_store: dict[str, Any] = {"fs": {"root_dir": str(root)}}
            else:
                server = S3Server(bench.path("moto")).start()
                bench.on_exit(server.stop)
                bucket = server.create_bucket("bench-lifecycle")
                objects = S3ObjectStore(server.settings(bucket))
                blob_store = server.blob_store_table(bucket)
            started = time.monotonic()
            total = asyncio.run(seed(objects, args.manifests))
            seeded = time.monotonic() - started
            config = config_for(bench.path(f"{kind}.toml"), blob_store, total // 2)
            for label, command in COMMANDS:
                seconds, rss, summary = run(config, command)
                rows.append([kind, label, f"{seconds:.1f}", f"{rss:.0f}", summary[:90]])
            rows.append([kind, f"(seeding {args.manifests} images)", f"{seeded:.1f}", "-", ""])
    print(machine_line())
    print(f"{args.manifests} images (manifest + config + layer each) over {REPOSITORIES} names")
    print_table(["storage", "command", "seconds", "peak RSS MiB", "summary"], rows)


if __name__ == "__main__":
    main()
