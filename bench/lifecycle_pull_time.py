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
    WrkOptions,
    add_wrk_arguments,
    machine_line,
    manifest_rates,
    median,
    print_table,
    pull_through,
    push_small_image,
    registry_server,
    require,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_wrk_arguments(parser)
    args = parser.parse_args()
    wrk = WrkOptions.from_args(args)
    require("docker-registry", "curl", "wrk")
    with Bench("lifecycle-pull-time") as bench:
        upstream = bench.upstream()
        image = push_small_image(upstream)
        systems = {
            "update_pull_time = false": registry_server(bench, upstream, "off"),
            "update_pull_time = true": registry_server(
                bench, upstream, "on", global_={"update_pull_time": True}
            ),
        }
        for registry in systems.values():
            pull_through(registry, image, upstream)
        references = {"by tag": image.tag, "by digest": image.digest}
        rps = manifest_rates(systems, image, references, wrk, args.repeat)
        names = list(systems)
        print(machine_line("docker-registry", "wrk"))
        print(f"{wrk.command}, {args.repeat} rounds, medians of requests/s")
        med = {key: median(values) for key, values in rps.items()}
        off, on = names
        rows = [[name, *(f"{med[name, r]:.0f}" for r in references)] for name in names]
        rows.append(["cost", *(f"{1 - med[on, r] / med[off, r]:+.1%}" for r in references)])
        print_table(["requests/s", *references], rows)


if __name__ == "__main__":
    main()
