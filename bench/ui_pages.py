"""How fast the web UI's pages answer with 10,000 cached images: p50/p95 per page.

    .venv/bin/python -m bench.ui_pages [--images 10000] [--requests 200]

The registry (`server`, fs storage, `[ui] enabled`) runs on a storage root filled with
`--images` cached images (bench/ui_catalog.py). After the first listing has taken its
storage snapshot, each page is requested `--requests` times in a row over one keep-alive
connection and timed to the last byte; the first request of each page (cold: sizes and
manifests not yet remembered) is reported apart. Goal: every page under 100 ms at p95.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from bench.harness import Bench, machine_line, print_table, registry_server, require
from bench.ui_catalog import REPOSITORY, TAG, fill_storage, image_name
from tests.fixtures.ports import poll_until

ALLOW = {"access_policy": {"default": "allow"}}
# `--rules`: a CEL rule decides every request (and every listed image) instead.
RULES = {
    "access_policy": {
        "default": "deny",
        "rules": [
            "request.action in ['ui-asset', 'ui-config', 'list-repositories', 'list-namespaces',"
            " 'list-revisions', 'get-manifest', 'cache-status', 'list-tags', 'get-api-version']"
        ],
    }
}
# The lifecycle of issue 14 would walk the same 10,000 images in the background: off.
EXTRA = {"ui": {"enabled": True}, "eviction": {"interval_secs": 0}}


def pages(images: int) -> dict[str, str]:
    middle = image_name(images // 2)
    return {
        "repositories /": "/",
        "images /hub (first 100)": f"/{REPOSITORY}",
        "images, a later page": f"/{REPOSITORY}?last={image_name(images - 150)}",
        "images, filtered ?q=": f"/{REPOSITORY}?q=img-0424",
        "one image": f"/{middle}",
        "one manifest": f"/{middle}:{TAG}",
        "cache status /_cache": "/_cache",
        "API repositories/list": "/v2/_angos/repositories/list",
        "API namespaces/list": f"/v2/_angos/namespaces/list?repository={REPOSITORY}",
        "API revisions/list": f"/v2/{middle}/_angos/revisions/list",
        "API cache/status": "/v2/_angos/cache/status",
    }


def timed(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    response = session.get(url, timeout=60)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return elapsed * 1000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--rules", action="store_true", help="decide with a CEL rule, per listed image too"
    )
    args = parser.parse_args()
    require("docker-registry")
    with Bench("ui-pages") as bench:
        upstream = bench.upstream()
        policy = RULES if args.rules else ALLOW
        registry = registry_server(bench, upstream, "registry", global_=policy, extra=EXTRA)
        fill_secs = fill_storage(bench.path("registry", "data"), args.images)
        session = requests.Session()
        started = time.monotonic()
        timed(session, f"{registry.url}/")  # the first listing takes the snapshot

        def listed() -> bool:
            answer = session.get(f"{registry.url}/v2/_angos/repositories/list", timeout=60)
            return answer.json()["repositories"][0]["namespace_count"] == args.images

        poll_until(listed, 120, what=f"a snapshot of {args.images} images")
        snapshot_secs = time.monotonic() - started

        rows = []
        for label, path in pages(args.images).items():
            url = registry.url + path
            first = timed(session, url)
            samples = [timed(session, url) for _ in range(args.requests)]
            rows.append(
                [
                    label,
                    f"{first:.1f}",
                    f"{statistics.median(samples):.1f}",
                    f"{percentile(samples, 0.95):.1f}",
                    f"{max(samples):.1f}",
                ]
            )
        print(machine_line("docker-registry"))
        print(
            f"{args.images} cached images (written in {fill_secs:.1f} s); first snapshot of "
            f"storage after {snapshot_secs:.2f} s; {args.requests} sequential requests per "
            "page over one keep-alive connection, milliseconds to the last byte; access: "
            + ("a CEL rule (each listed image decided)" if args.rules else 'default = "allow"')
        )
        print_table(["page", "first", "p50", "p95", "max"], rows)


if __name__ == "__main__":
    main()
