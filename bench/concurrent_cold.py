"""50 concurrent cold pulls of one image: upstream GETs per blob, and total time.

    .venv/bin/python -m bench.concurrent_cold [--clients 50] [--layers-mib 32,16,8,8] [--repeat 3]

Each client is a thread with its own `requests` session: GET the manifest by tag (Accept:
every manifest type), then every blob (config and layers) in order, streamed and counted;
all clients start together behind a barrier. Systems: this registry all in one process
(`server`) and split (`frontend` + `cacher` + redis-server, one fs root), Distribution in
proxy mode, and straight from the upstream (the baseline: one GET per client per blob).
Every round starts each cache fresh. After the pulls the cache is left to settle (all
stored, upstream log quiet) before the upstream's access log is counted, so the cachers'
own fetches are included.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from typing import Any

import requests

from bench.harness import (
    Bench,
    Deployment,
    MiB,
    cleanup,
    image_size,
    in_turns,
    machine_line,
    median,
    print_table,
    push_image,
    require,
    start_mode,
)
from tests.fixtures.images import PushedImage
from tests.fixtures.oci import MANIFEST_ACCEPT

MODES = {
    "server": "registry server",
    "split": "registry split",
    "proxy": "Distribution proxy",
    "direct": "direct (upstream)",
}


def pull(dep: Deployment, image: PushedImage, barrier: threading.Barrier) -> int:
    """One client's pull; returns bytes received; raises on any failure."""
    session = requests.Session()
    session.trust_env = False
    received = 0
    try:
        barrier.wait(timeout=60)
        response = session.get(
            dep.manifest_url(image, image.tag), headers={"Accept": MANIFEST_ACCEPT}, timeout=120
        )
        response.raise_for_status()
        manifest = response.json()
        received += len(response.content)
        for descriptor in [manifest["config"], *manifest["layers"]]:
            with session.get(
                dep.blob_url(image, descriptor["digest"]), stream=True, timeout=120
            ) as blob:
                blob.raise_for_status()
                size = sum(len(chunk) for chunk in blob.iter_content(1 << 20))
            if size != descriptor["size"]:
                raise RuntimeError(
                    f"{descriptor['digest']}: {size} bytes, not {descriptor['size']}"
                )
            received += size
    finally:
        session.close()
    return received


def concurrent_pulls(
    dep: Deployment, image: PushedImage, clients: int
) -> tuple[float, list[BaseException]]:
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pull(dep, image, barrier)
        except BaseException as error:  # reported, not raised from a thread
            errors.append(error)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=60)
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=600)
    return time.perf_counter() - started, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--layers-mib", default="32,16,8,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    require("docker-registry", "redis-server")
    modes = args.modes.split(",")
    sizes = [int(s) for s in args.layers_mib.split(",")]
    with Bench("concurrent-cold") as bench:
        upstream = bench.upstream()
        redis = bench.redis() if "split" in modes else None
        layers = bench.layers("layer", sizes, seed=20)
        image = push_image(upstream, "bench/concurrent", "1.0", layers)
        blob_paths = {f"/v2/{image.name}/blobs/{d}": d for d in image.blob_digests}

        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for round_ in range(args.repeat):
            for mode in in_turns(modes, round_):
                label = f"{mode}-{round_}"
                dep = start_mode(mode, bench, upstream, redis, label)
                try:
                    mark = upstream.mark()
                    wall, errors = concurrent_pulls(dep, image, args.clients)
                    dep.settle(image, upstream)
                    entries = upstream.requests_since(mark)
                finally:
                    cleanup(dep, bench, label)
                per_blob = Counter(
                    blob_paths[e.path]
                    for e in entries
                    if e.method == "GET" and e.path in blob_paths
                )
                results[mode].append(
                    {
                        "wall": wall,
                        "errors": len(errors),
                        "first_error": repr(errors[0]) if errors else "",
                        "max_gets": max(per_blob[d] for d in image.blob_digests),
                        "min_gets": min(per_blob[d] for d in image.blob_digests),
                        "manifest_gets": sum(
                            1 for e in entries if e.method == "GET" and "/manifests/" in e.path
                        ),
                        "requests": len(entries),
                        "bytes": sum(e.bytes for e in entries if e.method == "GET"),
                    }
                )

        total = image_size(image)
        print(machine_line("docker-registry", "redis-server"))
        print(
            f"{args.clients} concurrent cold pulls (threads, requests) of {len(sizes)} layers "
            f"({args.layers_mib} MiB) + config = {total / MiB:.1f} MiB; {args.repeat} rounds, "
            "medians; upstream counts after the cache settled"
        )
        base = median(r["wall"] for r in results["direct"]) if "direct" in modes else None
        rows = []
        for mode in modes:
            runs = results[mode]
            wall = median(r["wall"] for r in runs)
            gets = sorted({r["min_gets"] for r in runs} | {r["max_gets"] for r in runs})
            rows.append(
                [
                    MODES[mode],
                    f"{wall:.2f}",
                    f"{wall / base:.2f}" if base else "-",
                    f"{args.clients * total / wall / MiB:.0f}",
                    "-".join(str(g) for g in (gets[0], gets[-1])) if len(gets) > 1 else gets[0],
                    f"{median(r['manifest_gets'] for r in runs):.0f}",
                    f"{median(r['requests'] for r in runs):.0f}",
                    f"{median(r['bytes'] for r in runs) / total:.2f}",
                    str(sum(r["errors"] for r in runs)),
                ]
            )
        print_table(
            [
                "system",
                "seconds",
                "x direct",
                "MiB/s to clients",
                "upstream GETs per blob",
                "manifest GETs",
                "upstream requests",
                "upstream bytes/image",
                "failed clients",
            ],
            rows,
        )
        for mode in modes:
            for run in results[mode]:
                if run["errors"]:
                    print(f"{MODES[mode]}: {run['errors']} failed, e.g. {run['first_error']}")
                    break


if __name__ == "__main__":
    main()
