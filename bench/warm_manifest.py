"""Warm manifest GETs per second: this registry vs CNCF Distribution, with wrk.

    .venv/bin/python -m bench.warm_manifest [--repeat 3] [--duration 10] [--connections 32]

A small image is pushed to a Distribution, which serves it as a hosted registry. The
registry (`server`, fs storage, `immutable_tags = true`) pulls it once through; after the
cacher stored it, both are loaded with `wrk -t2 -c32 -d10s` and an Accept header listing
every manifest type, by tag and by digest. Systems take turns within each round; medians.
"""

from __future__ import annotations

import argparse

from bench.harness import (
    Bench,
    WrkOptions,
    add_wrk_arguments,
    direct,
    machine_line,
    manifest_rates,
    median,
    print_table,
    pull_through,
    push_small_image,
    registry_server,
    requests_by_registry,
    require,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_wrk_arguments(parser)
    parser.add_argument(
        "--workers", type=int, default=1, help="the registry's [server] workers (processes)"
    )
    args = parser.parse_args()
    wrk = WrkOptions.from_args(args)
    require("docker-registry", "curl", "wrk")
    with Bench("warm-manifest") as bench:
        upstream = bench.upstream()
        image = push_small_image(upstream)
        registry = registry_server(
            bench, upstream, "registry", extra={"server": {"workers": args.workers}}
        )
        pull_through(registry, image, upstream)

        systems = {"registry (server, fs)": registry, "Distribution (hosted)": direct(upstream)}
        references = {"by tag": image.tag, "by digest": image.digest}
        mark = upstream.mark()
        rps = manifest_rates(systems, image, references, wrk, args.repeat)
        from_registry = requests_by_registry(upstream, mark)

        print(machine_line("docker-registry", "wrk"))
        print(
            f"{wrk.command}, Accept: all manifest types, {args.repeat} rounds, "
            "medians of requests/s"
        )
        med = {key: median(values) for key, values in rps.items()}
        names = list(systems)
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
