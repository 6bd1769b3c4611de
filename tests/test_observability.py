"""Health, readiness and Prometheus metrics of the frontend."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import MirrorFactory, upstream_entry
from tests.fixtures.skopeo import skopeo_copy


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_and_readiness_answer_on_a_running_registry(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = mirror_factory({"hub": {"upstream": [upstream_entry(upstream)]}})
    assert mirror.get("/healthz").json()["status"] == "alive"
    ready = mirror.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"storage": "ok", "queue": "ok"}


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
    text = mirror.get("/metrics").text
    blobs = len(small_image.blob_digests)
    assert sample(text, "registry_cache_lookups_total", kind="manifest", result="miss") == 1
    assert sample(text, "registry_cache_lookups_total", kind="manifest", result="hit") == 1
    assert sample(text, "registry_cache_lookups_total", kind="blob", result="miss") == blobs
    assert sample(text, "registry_cache_lookups_total", kind="blob", result="hit") == blobs
    host = upstream.host_port
    # The frontend's manifest GET and blob GETs; the cacher stores the streamed blobs with
    # its own GETs (inline data spares small ones).
    assert (
        sample(text, "registry_upstream_requests_total", upstream=host, method="GET", status="200")
        >= 1 + blobs
    )
    assert (
        sample(text, "registry_http_requests_total", route="manifest", method="GET", status="200")
        == 2
    )
    assert sample(text, "registry_cache_jobs_total", kind="manifest", outcome="stored") == 1
    assert sample(text, "registry_cache_queue_depth") == 0
    assert small_image.name not in text
    assert small_image.digest[7:] not in text
