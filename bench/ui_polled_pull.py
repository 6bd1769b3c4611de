"""Does browsing slow pulls? Warm manifest GETs per second while the web UI is polled.

    .venv/bin/python -m bench.ui_polled_pull [--images 10000] [--repeat 3] [--duration 10]

Two registries (`server`, fs storage, `immutable_tags = true`) on storage roots holding
`--images` cached images (bench/ui_catalog.py) plus one small image pulled through: one
with `[ui] enabled`, one without. Each is loaded with `wrk -t2 -c32` on the small image's
manifest by tag; the UI registry once idle and once while a poller fetches its pages (the
repositories, a repository's first page, an image, a manifest, the cache status and its
JSON) back to back, one request every `--poll-interval` seconds. Conditions take turns
within each round; medians. Goal: polled >= 0.95 x idle.
"""

from __future__ import annotations

import argparse
import threading
import time

import requests

from bench.harness import (
    Bench,
    Deployment,
    WrkOptions,
    add_wrk_arguments,
    cpu_seconds,
    in_turns,
    machine_line,
    median,
    print_table,
    pull_through,
    push_small_image,
    registry_server,
    require,
)
from bench.ui_catalog import REPOSITORY, TAG, fill_storage, image_name
from bench.ui_pages import ALLOW, percentile


class Poller:
    """Fetches the UI's pages in a loop from a thread until stopped."""

    def __init__(self, base: str, paths: list[str], interval_secs: float):
        self.base = base
        self.paths = paths
        self.interval_secs = interval_secs
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        index = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            response = session.get(self.base + self.paths[index % len(self.paths)], timeout=60)
            if response.status_code != 200:
                raise RuntimeError(
                    f"poll {self.paths[index % len(self.paths)]}: {response.status_code}"
                )
            self.latencies.append((time.perf_counter() - started) * 1000)
            index += 1
            self._stop.wait(self.interval_secs)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    add_wrk_arguments(parser)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args()
    wrk = WrkOptions.from_args(args)
    require("docker-registry", "curl", "wrk")
    with Bench("ui-polled-pull") as bench:
        upstream = bench.upstream()
        image = push_small_image(upstream)

        def start(label: str, ui: bool) -> Deployment:
            extra = {"eviction": {"interval_secs": 0}, "ui": {"enabled": ui}}
            registry = registry_server(bench, upstream, label, global_=ALLOW, extra=extra)
            fill_storage(bench.path(label, "data"), args.images)
            pull_through(registry, image, upstream, by_digest=False)
            return registry

        with_ui, without_ui = start("with-ui", True), start("without-ui", False)
        middle = image_name(args.images // 2)
        paths = [
            "/",
            f"/{REPOSITORY}",
            f"/{middle}",
            f"/{middle}:{TAG}",
            "/_cache",
            "/v2/_angos/cache/status",
        ]
        requests.get(with_ui.url + "/", timeout=120)  # the first storage snapshot

        conditions = ["UI disabled", "UI enabled, idle", "UI enabled, polled"]
        rps: dict[str, list[float]] = {name: [] for name in conditions}
        cpu_us: dict[str, list[float]] = {name: [] for name in conditions}
        latencies: list[float] = []
        for round_ in range(args.repeat):
            for name in in_turns(conditions, round_):
                registry = without_ui if name == "UI disabled" else with_ui
                url = registry.manifest_url(image, image.tag)
                assert registry.pid is not None
                before = cpu_seconds([registry.pid])
                if name.endswith("polled"):
                    with Poller(with_ui.url, paths, args.poll_interval) as poller:
                        rate = wrk.run(url)
                    latencies += poller.latencies
                else:
                    rate = wrk.run(url)
                rps[name].append(rate)
                # CPU per request of the registry process: steady under a busy machine.
                used = cpu_seconds([registry.pid]) - before
                cpu_us[name].append(used / (rate * wrk.duration) * 1e6)

        print(machine_line("docker-registry", "wrk"))
        print(
            f"{args.images} cached images per registry; {wrk.command} on the manifest by tag, "
            f"{args.repeat} rounds, medians; the "
            f"poller fetched {len(paths)} UI pages in turn, one every {args.poll_interval}s"
        )
        medians = {name: median(values) for name, values in rps.items()}
        idle = medians["UI enabled, idle"]
        rows = [
            [
                name,
                f"{medians[name]:.0f}",
                f"{medians[name] / idle:.3f}",
                " ".join(f"{value:.0f}" for value in rps[name]),
                f"{median(cpu_us[name]):.0f}",
            ]
            for name in conditions
        ]
        print_table(
            ["condition", "requests/s", "x idle", "each round", "registry CPU us/request"], rows
        )
        if latencies:
            print(
                f"UI pages while loaded: {len(latencies)} requests, p50 "
                f"{percentile(latencies, 0.5):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms"
            )


if __name__ == "__main__":
    main()
