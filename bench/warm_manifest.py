"""Warm manifest GETs per second: this registry vs CNCF Distribution, with wrk.

    .venv/bin/python -m bench.warm_manifest [--repeat 3] [--duration 10] [--connections 32]

A small image is pushed to a Distribution, which serves it as a hosted registry. The
registry (`server`, fs storage, `immutable_tags = true`) pulls it once through; after the
cacher stored it, both are loaded with `wrk -t2 -c32 -d10s` and an Accept header listing
every manifest type, by tag and by digest. Systems take turns within each round; medians.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Sequence

from bench.harness import (
    Bench,
    curl_parallel,
    direct,
    machine_line,
    median,
    print_table,
    registry_server,
    require,
)
from tests.fixtures.oci import MANIFEST_ACCEPT
from tests.fixtures.plugin import pusher_for


def run_wrk(
    url: str,
    threads: int,
    connections: int,
    duration: int,
    headers: Sequence[str] = (),
    timeout_s: int = 2,
) -> float:
    """Requests/s; raises if any response was not 2xx/3xx or a socket failed (a response
    slower than ``timeout_s``, wrk's default 2, counts as a failed socket). ``headers``:
    more request headers ("Name: value"), e.g. an Authorization; https URLs are TLS (wrk
    does not verify the certificate; each connection does one handshake)."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s"]
    for header in (f"Accept: {MANIFEST_ACCEPT}", *headers):
        args += ["-H", header]
    args.append(url)
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or (errors and re.search(r"[1-9]", errors.group(1))):
        raise RuntimeError(f"wrk {url}: errors\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk {url}: no Requests/sec in\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=1, help="the registry's [server] workers (processes)"
    )
    args = parser.parse_args()
    require("docker-registry", "curl", "wrk")
    with Bench("warm-manifest") as bench:
        upstream = bench.upstream()
        pusher = pusher_for(upstream)
        image = pusher.small_image("bench/small", "1.0")
        pusher.client.close()

        registry = registry_server(
            bench, upstream, "registry", extra={"server": {"workers": args.workers}}
        )
        for reference in (image.tag, image.digest):
            curl_parallel([registry.manifest_url(image, reference)], expect_size=image.image.size)
        for blob in image.blobs:
            curl_parallel([registry.blob_url(image, blob.digest)], expect_size=blob.size)
        registry.settle(image, upstream)

        systems = {"registry (server, fs)": registry, "Distribution (hosted)": direct(upstream)}
        references = {"by tag": image.tag, "by digest": image.digest}
        mark = upstream.mark()
        rps: dict[tuple[str, str], list[float]] = {(s, r): [] for s in systems for r in references}
        names = list(systems)
        for round_ in range(args.repeat):
            for name in names[round_ % 2 :] + names[: round_ % 2]:
                for ref_label, reference in references.items():
                    url = systems[name].manifest_url(image, reference)
                    rps[name, ref_label].append(
                        run_wrk(url, args.threads, args.connections, args.duration)
                    )
        from_registry = [
            e for e in upstream.requests_since(mark) if e.user_agent.startswith("simple-registry")
        ]

        print(machine_line("docker-registry", "wrk"))
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, Accept: all manifest "
            f"types, {args.repeat} rounds, medians of requests/s"
        )
        med = {key: median(values) for key, values in rps.items()}
        reg, dist = names
        rows = [[name, *(f"{med[name, r]:.0f}" for r in references)] for name in names]
        rows.append(
            [
                "ratio registry/Distribution",
                *(f"{med[reg, r] / med[dist, r]:.2f}" for r in references),
            ]
        )
        print_table(["requests/s", *references], rows)
        print(f"upstream requests by the registry during the runs: {len(from_registry)}")


if __name__ == "__main__":
    main()
