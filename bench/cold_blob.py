"""Cold blob throughput and CPU per GB: this registry vs Distribution's proxy vs direct.

    .venv/bin/python -m bench.cold_blob [--single-mib 200] [--distinct 20] [--distinct-mib 50]
        [--repeat 5] [--modes direct,proxy,server,server-uvloop] [--upstream-tls]

Two loads, each on a fresh cache (new processes, empty storage) for every measurement:
- single: one `curl` of one --single-mib blob;
- distinct: --distinct `curl` clients at once, each on its own --distinct-mib blob (the
  shape of a cold `docker pull` of a big image);
- warm: the single blob again once the cache settled (what the event loop choice does to
  the sendfile path).

Systems, side by side in every round (the order rotates): straight from the upstream
(a hosted CNCF Distribution), Distribution in proxy mode, and this registry all in one
process (`server`) on asyncio's event loop and on uvloop's (`server-uvloop`: the same
registry started with `uvloop.install()` first; only when uvloop is installed).

Throughput: bytes to the clients / wall time of the curls. CPU: user + system seconds of
the serving processes (all threads; `/proc/PID/stat`) from before the first request until
the cache settled (everything stored, the upstream's log quiet), so the cacher's commit and
Distribution's second fetch count; for "direct", the upstream's own. Per GB = 10^9 bytes
sent to the clients. With --upstream-tls the upstream serves HTTPS (a test CA's
certificate; the registry trusts it through `server_ca_bundle`, Distribution's proxy and
curl through SSL_CERT_FILE / --cacert).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from bench.harness import (
    Bench,
    Deployment,
    MiB,
    cleanup,
    cpu_seconds,
    curl_parallel,
    in_turns,
    machine_line,
    median,
    print_table,
    push_and_drop,
    require,
    start_mode,
    upstream_for,
    write_layer,
)
from tests.fixtures import mirror as mirror_module
from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.oci import Blob

MODES = {
    "direct": "direct (upstream)",
    "proxy": "Distribution proxy",
    "server": "registry server (asyncio)",
    "server-uvloop": "registry server (uvloop)",
}
UVLOOP_COMMAND = [
    sys.executable,
    "-c",
    "import sys, uvloop; uvloop.install(); from simple_registry.cli import main; sys.exit(main())",
]


def serving_pids(dep: Deployment, upstream: Distribution) -> list[int]:
    if dep.pid is None:  # direct: the upstream serves
        assert upstream.process is not None
        return [upstream.process.pid]
    return [dep.pid, *dep.other_pids.values()]


def start(mode: str, bench: Bench, upstream: Distribution, label: str) -> Deployment:
    if mode != "server-uvloop":
        return start_mode(mode, bench, upstream, None, label)
    saved = mirror_module.REGISTRY_COMMAND
    mirror_module.REGISTRY_COMMAND = UVLOOP_COMMAND
    try:
        dep = start_mode("server", bench, upstream, None, label)
    finally:
        mirror_module.REGISTRY_COMMAND = saved
    dep.label = MODES[mode]
    return dep


def measure(
    dep: Deployment,
    upstream: Distribution,
    image: PushedImage,
    blobs: Sequence[Blob],
    curl_args: Sequence[str],
    warm: bool = False,
) -> dict[str, float]:
    pids = serving_pids(dep, upstream)
    if warm and dep.pid is not None:
        measure(dep, upstream, image, blobs, curl_args)
    before = cpu_seconds(pids)
    wall, _ = curl_parallel(
        [dep.blob_url(image, b.digest) for b in blobs],
        expect_size=[b.size for b in blobs],
        timeout_s=600,
        extra_args=curl_args,
    )
    transfer = cpu_seconds(pids) - before
    if dep.pid is not None:
        dep.settle_blobs({b.digest for b in blobs}, upstream)
    total = cpu_seconds(pids) - before
    sent = sum(b.size for b in blobs)
    return {"wall": wall, "bytes": sent, "cpu": total, "cpu_transfer": transfer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single-mib", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=20)
    parser.add_argument("--distinct-mib", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--loads", default="single,distinct,warm")
    default_modes = ["direct", "proxy", "server"]
    if importlib.util.find_spec("uvloop") is not None:
        default_modes.append("server-uvloop")
    parser.add_argument("--modes", default=",".join(default_modes))
    parser.add_argument("--upstream-tls", action="store_true")
    args = parser.parse_args()
    require("docker-registry", "curl")
    modes = args.modes.split(",")
    wanted_loads = args.loads.split(",")
    with Bench("cold-blob") as bench:
        upstream, curl_args = upstream_for(bench, args.upstream_tls)
        single = write_layer(bench.path("data", "single.tar"), args.single_mib * MiB, seed=300)
        distinct = bench.layers("d", [args.distinct_mib] * args.distinct, seed=400)
        image = push_and_drop(upstream, "bench/coldblob", [single, *distinct])
        loads = {
            f"single: 1 x {args.single_mib} MiB, 1 client": [single.blob],
            f"distinct: {args.distinct} x {args.distinct_mib} MiB at once": [
                layer.blob for layer in distinct
            ],
            f"warm: 1 x {args.single_mib} MiB, 1 client, cached": [single.blob],
        }
        loads = {k: v for k, v in loads.items() if k.split(":")[0] in wanted_loads}
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_ in range(args.repeat):
            for mode in in_turns(modes, round_):
                for load, blobs in loads.items():
                    label = f"{mode}-{round_}-{len(blobs)}"
                    dep = start(mode, bench, upstream, label)
                    try:
                        warm = load.startswith("warm")
                        row = measure(dep, upstream, image, blobs, curl_args, warm)
                    finally:
                        cleanup(dep, bench, label)
                    results.setdefault((mode, load), []).append(row)

        print(machine_line("docker-registry", "curl"))
        print(
            f"cold blob GETs, upstream {'https (TLS)' if args.upstream_tls else 'http'}, "
            f"{args.repeat} rounds, medians; fresh cache per measurement (warm: filled by one "
            "cold GET first); CPU until settled"
        )
        for load in loads:
            print(f"\n{load}")
            speed = {
                m: median(r["bytes"] / r["wall"] / MiB for r in results[m, load]) for m in modes
            }
            rows = []
            for mode in modes:
                runs = results[mode, load]
                rows.append(
                    [
                        MODES[mode],
                        f"{speed[mode]:.0f}",
                        f"{speed[mode] / speed['proxy']:.2f}" if "proxy" in speed else "-",
                        f"{speed[mode] / speed['direct']:.2f}" if "direct" in speed else "-",
                        f"{median(r['cpu'] / r['bytes'] * 1e9 for r in runs):.2f}",
                        f"{median(r['cpu_transfer'] / r['bytes'] * 1e9 for r in runs):.2f}",
                    ]
                )
            print_table(
                [
                    "system",
                    "MiB/s",
                    "x proxy",
                    "x direct",
                    "CPU s/GB (settled)",
                    "CPU s/GB (transfer)",
                ],
                rows,
            )


if __name__ == "__main__":
    main()
