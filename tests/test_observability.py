"""Health, readiness and Prometheus metrics of the frontend."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.fixtures.distribution import Distribution
from tests.fixtures.idle import wait_until_idle
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import MirrorFactory, metric_sample, upstream_entry
from tests.fixtures.plugin import ProxiedLayer
from tests.fixtures.ports import poll_until
from tests.fixtures.skopeo import skopeo_copy


def test_health_and_readiness_answer_on_a_running_registry(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = mirror_factory({"hub": {"upstream": [upstream_entry(upstream)]}})
    assert mirror.get("/healthz").json()["status"] == "alive"
    ready = mirror.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"storage": "ok", "queue": "ok"}
    assert ready.json()["idle"] is True


def test_metrics_count_misses_hits_and_upstream_requests_without_names_or_digests(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    mirror = mirror_factory(
        {"hub": {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}
    )
    ref = f"{mirror.host_port}/hub/{small_image.name}:{small_image.tag}"
    skopeo_copy(ref, tmp_path / "cold")
    mirror.wait_for_blobs({small_image.digest, *small_image.blob_digests})
    mirror.wait_for_tag(f"hub/{small_image.name}", small_image.tag)
    skopeo_copy(ref, tmp_path / "warm")
    wait_until_idle()
    text = mirror.metrics()
    blobs = len(small_image.blob_digests)
    assert metric_sample(text, "registry_cache_lookups_total", kind="manifest", result="miss") == 1
    assert metric_sample(text, "registry_cache_lookups_total", kind="manifest", result="hit") == 1
    assert metric_sample(text, "registry_cache_lookups_total", kind="blob", result="miss") == blobs
    assert metric_sample(text, "registry_cache_lookups_total", kind="blob", result="hit") == blobs
    host = upstream.host_port
    # The frontend's manifest GET and blob GETs, and nothing else: the cacher stores what
    # the frontend fetched, and the warm pull of an immutable tag asks the upstream nothing.
    assert metric_sample(text, "registry_upstream_requests_total", upstream=host) == 1 + blobs
    assert (
        metric_sample(
            text, "registry_upstream_requests_total", upstream=host, method="GET", status="200"
        )
        == 1 + blobs
    )
    assert (
        metric_sample(
            text, "registry_http_requests_total", route="manifest", method="GET", status="200"
        )
        == 2
    )
    assert metric_sample(text, "registry_cache_jobs_total", kind="manifest", outcome="stored") == 1
    assert metric_sample(text, "registry_cache_queue_depth") == 0
    assert small_image.name not in text
    assert small_image.digest[7:] not in text


def test_readiness_says_busy_while_a_download_or_its_cache_job_runs_and_idle_after(
    mirror_factory: MirrorFactory, proxied_layer: Callable[..., ProxiedLayer]
) -> None:
    served = proxied_layer(4, bytes_per_sec=4 * 1024 * 1024)  # about a second
    mirror = mirror_factory({"hub": {"upstream": [{"url": served.proxy.url}]}})
    assert mirror.get("/readyz").json()["idle"] is True
    seen: list[dict[str, Any]] = []

    def busy() -> bool:
        seen.append(mirror.get("/readyz").json())
        return not seen[-1]["idle"]

    with ThreadPoolExecutor(1) as pool:
        pull = pool.submit(mirror.get, f"/v2/hub/{served.name}/blobs/{served.layer.digest}")
        poll_until(busy, 10, what="readiness to report the download")
        assert pull.result(60).status_code == 200
    assert seen[-1]["activity"]["downloads"] == 1
    # Idle once the download, its hand-over and the cache job are done: the blob is stored.
    poll_until(lambda: mirror.get("/readyz").json()["idle"], 30, what="idle")
    assert served.layer.digest in mirror.stored_blobs()
    assert mirror.get("/readyz").json()["activity"] == {
        "downloads": 0,
        "manifest_fetches": 0,
        "jobs_submitting": 0,
        "queue_depth": 0,
    }
