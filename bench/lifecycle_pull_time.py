"""The cost of `update_pull_time` on warm manifest requests/s (target: at most 5%).

    .venv/bin/python -m bench.lifecycle_pull_time [--repeat 3] [--duration 10] [--connections 32]

Two registries (`server`, fs, `immutable_tags = true`) serve the same cached image, one with
`[global] update_pull_time = true` (the default resolution of 60 s, so each pulled tag is
written about once a minute) and one without; wrk loads each by tag and by digest, taking
turns within each round (as bench/warm_manifest.py does). Medians.
"""

from __future__ import annotations

import argparse

from bench.harness import (
    Bench,
    curl_parallel,
    machine_line,
    median,
    print_table,
    registry_server,
    require,
)
from bench.warm_manifest import run_wrk
from tests.fixtures.plugin import pusher_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    require("docker-registry", "curl", "wrk")
    with Bench("lifecycle-pull-time") as bench:
        upstream = bench.upstream()
        pusher = pusher_for(upstream)
        image = pusher.small_image("bench/small", "1.0")
        pusher.client.close()
        systems = {
            "update_pull_time = false": registry_server(bench, upstream, "off"),
            "update_pull_time = true": registry_server(
                bench, upstream, "on", global_={"update_pull_time": True}
            ),
        }
        for registry in systems.values():
            for reference in (image.tag, image.digest):
                curl_parallel(
                    [registry.manifest_url(image, reference)], expect_size=image.image.size
                )
            for blob in image.blobs:
                curl_parallel([registry.blob_url(image, blob.digest)], expect_size=blob.size)
            registry.settle(image, upstream)
        references = {"by tag": image.tag, "by digest": image.digest}
        names = list(systems)
        rps: dict[tuple[str, str], list[float]] = {(s, r): [] for s in systems for r in references}
        for round_ in range(args.repeat):
            for name in names[round_ % 2 :] + names[: round_ % 2]:
                for label, reference in references.items():
                    url = systems[name].manifest_url(image, reference)
                    rps[name, label].append(
                        run_wrk(url, args.threads, args.connections, args.duration)
                    )
        print(machine_line("docker-registry", "wrk"))
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{args.repeat} rounds, medians of requests/s"
        )
        med = {key: median(values) for key, values in rps.items()}
        off, on = names
        rows = [[name, *(f"{med[name, r]:.0f}" for r in references)] for name in names]
        rows.append(["cost", *(f"{1 - med[on, r] / med[off, r]:+.1%}" for r in references)])
        print_table(["requests/s", *references], rows)


if __name__ == "__main__":
    main()
