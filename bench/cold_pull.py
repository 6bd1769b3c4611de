"""Cold pulls of a multi-layer image, and what each pull costs the upstream.

    .venv/bin/python -m bench.cold_pull [--layers-mib 100,50,30,20] [--repeat 3]

Systems, side by side in every round: straight from the upstream (a hosted CNCF
Distribution), Distribution in proxy mode, this registry all in one process (`server`),
and split (`frontend` + `cacher` + redis-server sharing one fs root). Every measurement
starts a fresh cache (new process, empty storage).

Per round and system:
1. `skopeo copy` of the image (cold), then wait until the cache has settled (everything
   stored, and the upstream's access log quiet: 0.3 s for the registry, whose cacher works
   from the frontend's staged bytes; 2 s for Distribution's proxy), count the upstream's
   requests and body bytes since the pull started (the cacher's own fetches included);
   then `skopeo copy` again (warm) and count again.
2. a fresh cache again, and `curl` of the biggest layer alone (cold).

Prints medians, ratios to direct, and upstream bytes / image size (manifest + blobs).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench.harness import (
    Bench,
    Deployment,
    MiB,
    cleanup,
    curl_parallel,
    image_size,
    in_turns,
    machine_line,
    median,
    print_table,
    push_image,
    require,
    start_mode,
    upstream_cost,
)
from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.skopeo import skopeo_copy

MODES = {
    "direct": "direct (upstream)",
    "proxy": "Distribution proxy",
    "server": "registry server",
    "split": "registry split",
}


def timed_skopeo(ref: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    skopeo_copy(ref, dest, timeout_s=600)
    return time.perf_counter() - started


def pull_round(
    dep: Deployment, image: PushedImage, upstream: Distribution, out: Path
) -> tuple[float, dict[str, int], float, dict[str, int]]:
    mark = upstream.mark()
    cold = timed_skopeo(dep.ref(image), out)
    dep.settle(image, upstream)
    cold_cost = upstream_cost(upstream, mark)
    mark = upstream.mark()
    warm = timed_skopeo(dep.ref(image), out)
    dep.settle(image, upstream)
    warm_cost = upstream_cost(upstream, mark)
    return cold, cold_cost, warm, warm_cost


def spread(values: list[int]) -> str:
    low, high, mid = min(values), max(values), median(values)
    text = f"{mid:.0f}" if mid == int(mid) else f"{mid:.1f}"
    return text if low == high else f"{text} ({low}-{high})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers-mib", default="100,50,30,20")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    require("docker-registry", "skopeo", "redis-server", "curl")
    modes = args.modes.split(",")
    sizes = [int(s) for s in args.layers_mib.split(",")]
    with Bench("cold-pull") as bench:
        upstream = bench.upstream()
        redis = bench.redis() if "split" in modes else None
        layers = bench.layers("layer", sizes, seed=10)
        image = push_image(upstream, "bench/cold", "1.0", layers)
        biggest = max(image.blobs, key=lambda b: b.size)
        total = image_size(image)
        out = bench.path("out")

        times: dict[tuple[str, str], list[float]] = {}
        costs: dict[tuple[str, str], list[dict[str, int]]] = {}
        for round_ in range(args.repeat):
            for mode in in_turns(modes, round_):
                label = f"{mode}-{round_}-pull"
                dep = start_mode(mode, bench, upstream, redis, label)
                try:
                    cold, cold_cost, warm, warm_cost = pull_round(dep, image, upstream, out)
                finally:
                    cleanup(dep, bench, label)
                times.setdefault((mode, "cold"), []).append(cold)
                times.setdefault((mode, "warm"), []).append(warm)
                costs.setdefault((mode, "cold"), []).append(cold_cost)
                costs.setdefault((mode, "warm"), []).append(warm_cost)

                label = f"{mode}-{round_}-blob"
                dep = start_mode(mode, bench, upstream, redis, label)
                try:
                    upstream.mark()
                    wall, _ = curl_parallel(
                        [dep.blob_url(image, biggest.digest)], expect_size=biggest.size
                    )
                finally:
                    cleanup(dep, bench, label)
                times.setdefault((mode, "blob"), []).append(wall)

        print(machine_line("docker-registry", "skopeo", "redis-server", "curl"))
        print(
            f"image: {len(sizes)} layers ({args.layers_mib} MiB) + config, "
            f"{total / MiB:.1f} MiB; biggest blob {biggest.size / MiB:.1f} MiB; "
            f"{args.repeat} rounds, medians, fresh cache per measurement"
        )
        med = {key: median(values) for key, values in times.items()}
        base = "direct" if "direct" in modes else modes[0]
        rows = []
        for mode in modes:
            row = [MODES[mode]]
            for kind in ("cold", "blob", "warm"):
                value = med[mode, kind]
                row += [f"{value:.2f}", f"{value / med[base, kind]:.2f}"]
            rows.append(row)
        print_table(
            [
                "seconds",
                "skopeo cold",
                "x direct",
                "curl biggest blob cold",
                "x direct",
                "skopeo warm",
                "x direct",
            ],
            rows,
        )
        print()
        print("upstream cost per pull (access log of the upstream; GET bodies; cacher included)")
        rows = []
        for mode in modes:
            row = [MODES[mode]]
            for kind in ("cold", "warm"):
                entries = costs[mode, kind]
                bytes_ = [c["bytes"] for c in entries]
                row += [
                    spread([c["requests"] for c in entries]),
                    spread([c["blob_gets"] for c in entries]),
                    f"{median(bytes_) / MiB:.1f}",
                    f"{median(bytes_) / total:.3f}",
                ]
            rows.append(row)
        print_table(
            [
                "upstream",
                "cold requests",
                "cold blob GETs",
                "cold MiB",
                "cold bytes/image",
                "warm requests",
                "warm blob GETs",
                "warm MiB",
                "warm bytes/image",
            ],
            rows,
        )
        print(
            f"requests: every request in the upstream's log ({len(image.blobs)} blobs in the "
            "image; pings, HEADs and manifest GETs included); bytes: GET bodies"
        )


if __name__ == "__main__":
    main()
