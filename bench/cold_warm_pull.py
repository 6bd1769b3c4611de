"""Cold and warm skopeo pulls of a large image through the registry, beside the same pull
straight from the upstream (CNCF Distribution), measured in one run.

    .venv/bin/python -m bench.cold_warm_pull [--size-mib 100] [--repeat 3]

Every round uses a fresh registry (empty storage) for the cold pull, then pulls again warm.
Prints medians and the ratios to the direct pull.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fixtures.distribution import Distribution
from tests.fixtures.mirror import Mirror, mirror_config, upstream_entry
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import free_port
from tests.fixtures.skopeo import skopeo_copy


def timed_pull(ref: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    skopeo_copy(ref, dest, timeout_s=600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    upstream = Distribution(work / "upstream").start()
    try:
        image = pusher_for(upstream, work / "cache").large_image(
            "bench/large", "1.0", size_mib=args.size_mib
        )
        direct, cold, warm = [], [], []
        for round_ in range(args.repeat):
            root = work / f"mirror-{round_}"
            config = mirror_config(
                root,
                {"docker-io": {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}},
                port=free_port(),
            )
            mirror = Mirror(root, config).start()
            try:
                direct.append(timed_pull(image.ref, work / "out"))
                ref = f"{mirror.host_port}/docker-io/{image.name}:{image.tag}"
                cold.append(timed_pull(ref, work / "out"))
                mirror.wait_for_blobs({image.digest, *image.blob_digests}, deadline_s=300)
                warm.append(timed_pull(ref, work / "out"))
            finally:
                mirror.stop()
        d, c, w = (statistics.median(x) for x in (direct, cold, warm))
        skopeo = subprocess.run(
            ["skopeo", "--version"], capture_output=True, text=True
        ).stdout.strip()
        print(
            f"machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
            f"Python {platform.python_version()}, {skopeo}"
        )
        print(f"image: {args.size_mib} MiB layer, {args.repeat} rounds, medians")
        print(f"direct from upstream : {d:6.2f} s")
        print(f"cold through registry: {c:6.2f} s  ({c / d:.2f}x direct)")
        print(f"warm through registry: {w:6.2f} s  ({w / d:.2f}x direct)")
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
