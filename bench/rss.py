"""Peak RSS of the serving process while many clients stream large blob misses at once.

    .venv/bin/python -m bench.rss [--big-mib 1024] [--small-mib 256] [--repeat 3]

Two loads, each on a fresh cache (every request is a miss when it starts):
- coalesced: ONE 1 GiB blob, 20 `curl` clients at once;
- distinct: 4 different 256 MiB blobs, 5 `curl` clients on each, at once.
Systems: this registry all in one process (`server`: frontend and cacher share the
process), split (the `frontend`'s RSS; the `cacher`'s is printed beside it), and CNCF
Distribution in proxy mode. The peak is the kernel's high-water mark (`VmHWM` in
/proc/PID/status) read after the cache settled, so it covers start-up, the transfers and
the cacher's commit; the idle RSS right before the clients start is printed too.
Blobs are generated (fast, deterministic) into the temp folder, pushed to the upstream
in 8 MiB PATCH chunks, and deleted at the end with everything else. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from bench.harness import (
    Bench,
    MiB,
    cleanup,
    curl_parallel,
    in_turns,
    machine_line,
    median,
    print_table,
    push_image,
    require,
    start_mode,
    write_layer,
)

MODES = {"server": "registry server", "split": "registry split", "proxy": "Distribution proxy"}


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssPoller:
    """Polls VmRSS every 10 ms (a cross-check of VmHWM, which the kernel keeps)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mb(kib: float) -> str:
    return f"{kib * 1024 / 1e6:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-mib", type=int, default=256)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--distinct", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    require("docker-registry", "redis-server", "curl")
    modes = args.modes.split(",")
    with Bench("rss") as bench:
        upstream = bench.upstream()
        redis = bench.redis() if "split" in modes else None
        big = write_layer(bench.path("data", "big.tar"), args.big_mib * MiB, seed=100)
        small = bench.layers("small", [args.small_mib] * args.distinct, seed=200)
        image = push_image(upstream, "bench/rss", "1.0", [big, *small])
        for layer in [big, *small]:  # the upstream has its copy; free the disk
            assert layer.blob.path is not None
            layer.blob.path.unlink()
        per_blob = args.clients // args.distinct
        loads = {
            f"coalesced: 1 x {args.big_mib} MiB, {args.clients} clients": [big.blob] * args.clients,
            f"distinct: {args.distinct} x {args.small_mib} MiB, {per_blob} clients each": [
                layer.blob for layer in small for _ in range(per_blob)
            ],
        }
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_ in range(args.repeat):
            for mode in in_turns(modes, round_):
                for load, blobs in loads.items():
                    label = f"{mode}-{round_}-{len(blobs)}-{blobs[0].size}"
                    dep = start_mode(mode, bench, upstream, redis, label)
                    try:
                        assert dep.pid is not None
                        idle = status_kib(dep.pid, "VmRSS")
                        with RssPoller(dep.pid) as poller:
                            wall, _ = curl_parallel(
                                [dep.blob_url(image, b.digest) for b in blobs],
                                expect_size=[b.size for b in blobs],
                                timeout_s=600,
                            )
                            dep.settle_blobs({b.digest for b in blobs}, upstream)
                        row = {
                            "idle": idle,
                            "hwm": status_kib(dep.pid, "VmHWM"),
                            "polled": poller.peak_kib,
                            "wall": wall,
                            "bytes": sum(b.size for b in blobs),
                        }
                        for name, pid in dep.other_pids.items():
                            row[name] = status_kib(pid, "VmHWM")
                    finally:
                        cleanup(dep, bench, label)
                    results.setdefault((mode, load), []).append(row)

        print(machine_line("docker-registry", "redis-server", "curl"))
        print(
            f"peak RSS of the serving process, {args.repeat} rounds, medians (MB = 10^6 bytes); "
            "fresh cache per run"
        )
        rows = []
        for load in loads:
            for mode in modes:
                runs = results[mode, load]
                wall = median(r["wall"] for r in runs)
                cells = [
                    load,
                    MODES[mode],
                    mb(median(r["idle"] for r in runs)),
                    mb(median(r["hwm"] for r in runs)),
                    mb(max(r["hwm"] for r in runs)),
                    mb(median(r["polled"] for r in runs)),
                    f"{wall:.1f}",
                    f"{runs[0]['bytes'] / wall / MiB:.0f}",
                    mb(median(r["cacher"] for r in runs)) if "cacher" in runs[0] else "-",
                ]
                rows.append(cells)
        print_table(
            [
                "load",
                "system",
                "idle MB",
                "peak MB (VmHWM)",
                "max of rounds",
                "polled VmRSS MB",
                "seconds",
                "MiB/s to clients",
                "split cacher peak MB",
            ],
            rows,
        )


if __name__ == "__main__":
    main()
