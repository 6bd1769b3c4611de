"""Reliability under faults, on real processes: upstream death mid-blob, corrupted bytes,
upstream outage (stale serving, circuit breaker), rate limits, 50 concurrent cold pulls,
S3 outage."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.idle import wait_until_idle
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.oci import MANIFEST_ACCEPT
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import poll_until, silent_port
from tests.fixtures.skopeo import dir_manifest, skopeo_copy

REPO = "hub"
ACCEPT = MANIFEST_ACCEPT  # every manifest type, as pulling clients send


@pytest.fixture
def private_upstream(distribution_factory: Any) -> Distribution:
    return distribution_factory()


def through_proxy(mirror_factory: MirrorFactory, proxy: FaultyProxy, **repository: Any) -> Mirror:
    return mirror_factory({REPO: {"upstream": [{"url": proxy.url}], **repository}})


def read_all(response: requests.Response) -> bytes:
    return b"".join(response.iter_content(256 * 1024))


def test_an_upstream_that_dies_mid_blob_fails_the_transfer_and_caches_nothing(
    mirror_factory: MirrorFactory,
    private_upstream: Distribution,
    faulty_proxy: Callable[..., FaultyProxy],
    unique_repo: str,
) -> None:
    image = pusher_for(private_upstream).large_image(unique_repo, "1.0", size_mib=24)
    layer = image.largest_blob
    proxy = faulty_proxy(private_upstream.url)
    proxy.faults.throttle_bytes_per_sec = 8 * 1024 * 1024
    mirror = through_proxy(mirror_factory, proxy)
    url = f"{mirror.url}/v2/{REPO}/{unique_repo}/blobs/{layer.digest}"
    outcome: dict[str, Any] = {"received": 0}

    def client() -> None:
        try:
            with requests.get(url, stream=True, timeout=60) as response:
                outcome["status"] = response.status_code
                for chunk in response.iter_content(256 * 1024):
                    outcome["received"] += len(chunk)
        except requests.RequestException as error:
            outcome["error"] = error

    thread = threading.Thread(target=client)
    thread.start()
    poll_until(lambda: proxy.blob_bytes_sent > 4 * 1024 * 1024, 30, what="the blob to be half way")
    proxy.kill()
    thread.join(60)
    assert outcome.get("status") == 200  # the stream had started
    assert "error" in outcome, f"the transfer ended cleanly after {outcome['received']} bytes"
    assert outcome["received"] < layer.size
    wait_until_idle()  # nothing left that could still cache it
    assert layer.digest not in mirror.stored_blobs()
    assert mirror.temp_files() == []

    faulty_proxy(private_upstream.url, port=proxy.port)  # back on the same port
    with requests.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert hashlib.sha256(read_all(response)).hexdigest() == layer.digest[7:]
    mirror.wait_for_blobs({layer.digest})


def test_corrupted_upstream_bytes_abort_the_transfer_are_logged_and_not_cached(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    faulty_proxy: Callable[..., FaultyProxy],
) -> None:
    proxy = faulty_proxy(upstream.url)
    proxy.faults.corrupt_blobs = True
    mirror = through_proxy(mirror_factory, proxy)
    blob = small_image.largest_blob
    url = f"{mirror.url}/v2/{REPO}/{small_image.name}/blobs/{blob.digest}"
    with (
        pytest.raises(requests.RequestException),
        requests.get(url, stream=True, timeout=30) as response,
    ):
        body = read_all(response)
        # A clean finish would be a bug; make the assertion explicit if it happens.
        raise AssertionError(f"transfer finished cleanly with {len(body)} bytes")
    mirror.wait_for_log(f"digest mismatch: expected {blob.digest}")
    assert blob.digest not in mirror.stored_blobs()


def test_with_the_upstream_down_cached_tags_keep_pulling_and_mutable_ones_carry_a_warning(
    mirror_factory: MirrorFactory, private_upstream: Distribution, unique_repo: str, tmp_path: Path
) -> None:
    pusher = pusher_for(private_upstream)
    image = pusher.small_image(unique_repo, "1.0")
    pusher.retag(unique_repo, "1.0", "latest")
    pusher.small_image(f"{unique_repo}-other", "1.0")
    mirror = mirror_factory(
        {
            REPO: {
                "immutable_tags": True,
                "immutable_tags_exclusions": ["^latest$"],
                "upstream": [upstream_entry(private_upstream, connect_timeout_secs=2)],
            }
        }
    )
    for tag in ("1.0", "latest"):
        skopeo_copy(f"{mirror.host_port}/{REPO}/{unique_repo}:{tag}", tmp_path / f"warm-{tag}")
        mirror.wait_for_tag(f"{REPO}/{unique_repo}", tag)
    mirror.wait_for_blobs({image.digest, *image.blob_digests})
    private_upstream.stop()

    for tag in ("1.0", "latest"):
        skopeo_copy(f"{mirror.host_port}/{REPO}/{unique_repo}:{tag}", tmp_path / f"down-{tag}")
        assert dir_manifest(tmp_path / f"down-{tag}") == image.manifest_bytes
    stale = mirror.get(f"/v2/{REPO}/{unique_repo}/manifests/latest", headers={"Accept": ACCEPT})
    assert stale.status_code == 200
    assert stale.headers["Warning"].startswith("299 ")
    fresh = mirror.get(f"/v2/{REPO}/{unique_repo}/manifests/1.0", headers={"Accept": ACCEPT})
    assert "Warning" not in fresh.headers
    missing = mirror.get(
        f"/v2/{REPO}/{unique_repo}-other/manifests/1.0", headers={"Accept": ACCEPT}
    )
    assert missing.status_code == 503
    assert missing.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_once_the_circuit_opens_a_hanging_upstream_costs_no_more_waiting(
    mirror_factory: MirrorFactory,
) -> None:
    with silent_port() as port:
        mirror = mirror_factory(
            {REPO: {"upstream": [{"url": f"http://127.0.0.1:{port}", "read_timeout_secs": 1}]}},
            global_={"upstream_failure_threshold": 2, "upstream_cooldown_secs": 60},
        )

        def timed_pull() -> float:
            started = time.monotonic()
            response = mirror.get(f"/v2/{REPO}/any/thing/manifests/1.0")
            assert response.status_code == 503
            assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
            return time.monotonic() - started

        # Each of the first two waits out the read timeout: the upstream really hangs.
        assert [timed_pull() >= 0.9 for _ in range(2)] == [True, True]
        # Then the circuit is open: the answer comes at once instead of after a timeout.
        assert max(timed_pull() for _ in range(3)) < 0.5


def test_an_open_circuit_spares_a_failing_upstream_further_requests(
    mirror_factory: MirrorFactory, upstream: Distribution, faulty_proxy: Callable[..., FaultyProxy]
) -> None:
    proxy = faulty_proxy(upstream.url)
    proxy.faults.answer = (503, {})
    mirror = mirror_factory(
        {REPO: {"upstream": [{"url": proxy.url}]}},
        global_={"upstream_failure_threshold": 3, "upstream_cooldown_secs": 60},
    )
    for _ in range(8):
        response = mirror.get(f"/v2/{REPO}/any/thing/manifests/1.0")
        assert response.status_code == 503
    assert proxy.count(contains="/manifests/") == 3
    assert "circuit open" in mirror.log()


def test_a_429_with_retry_after_stops_upstream_requests_while_cached_content_is_served(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    faulty_proxy: Callable[..., FaultyProxy],
    tmp_path: Path,
) -> None:
    proxy = faulty_proxy(upstream.url)
    mirror = through_proxy(mirror_factory, proxy)  # every tag mutable: each pull asks upstream
    name = f"{REPO}/{small_image.name}"
    skopeo_copy(f"{mirror.host_port}/{name}:{small_image.tag}", tmp_path / "warm")
    mirror.wait_for_tag(name, small_image.tag)
    mirror.wait_for_blobs({small_image.digest, *small_image.blob_digests})

    proxy.faults.answer = (429, {"Retry-After": "30"})
    before = len(proxy.requests)
    for _ in range(5):
        cached = mirror.get(f"/v2/{name}/manifests/{small_image.tag}", headers={"Accept": ACCEPT})
        assert cached.status_code == 200
        assert cached.content == small_image.manifest_bytes
        assert "Warning" in cached.headers
    uncached = mirror.get(f"/v2/{REPO}/not/cached/manifests/1.0", headers={"Accept": ACCEPT})
    assert uncached.status_code == 429
    assert uncached.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 0 < int(uncached.headers["Retry-After"]) <= 30
    assert len(proxy.requests) - before == 1, (
        "only the request that got the 429 reached the upstream"
    )


@pytest.mark.timeout(300)
def test_fifty_concurrent_cold_pulls_make_one_upstream_get_per_blob_and_get_identical_bytes(
    mirror_factory: MirrorFactory, private_upstream: Distribution, unique_repo: str
) -> None:
    image = pusher_for(private_upstream).large_image(unique_repo, "1.0", size_mib=16)
    mirror = mirror_factory(
        {REPO: {"immutable_tags": True, "upstream": [upstream_entry(private_upstream)]}}
    )
    mark = private_upstream.mark()
    barrier = threading.Barrier(50)

    def pull(_: int) -> dict[str, str]:
        session = requests.Session()
        barrier.wait(30)
        manifest = session.get(
            f"{mirror.url}/v2/{REPO}/{unique_repo}/manifests/1.0",
            headers={"Accept": ACCEPT},
            timeout=120,
        )
        digests = {"manifest": hashlib.sha256(manifest.content).hexdigest()}
        for blob in image.blobs:
            body = session.get(
                f"{mirror.url}/v2/{REPO}/{unique_repo}/blobs/{blob.digest}", timeout=120
            )
            digests[blob.digest] = hashlib.sha256(body.content).hexdigest()
        return digests

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(pull, range(50)))
    expected = {"manifest": image.digest[7:], **{b.digest: b.digest[7:] for b in image.blobs}}
    assert all(result == expected for result in results)
    mirror.wait_for_blobs({image.digest, *image.blob_digests})
    requests_seen = private_upstream.settled_requests_since(mark)
    for blob in image.blobs:
        gets = [r for r in requests_seen if r.method == "GET" and r.path.endswith(blob.digest)]
        assert len(gets) == 1, f"{blob.digest}: {len(gets)} upstream GETs"
    manifest_gets = [r for r in requests_seen if r.method == "GET" and "/manifests/" in r.path]
    assert len(manifest_gets) == 1


def test_with_s3_down_misses_still_stream_from_the_upstream(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    s3_server_factory: Any,
    tmp_path: Path,
) -> None:
    s3 = s3_server_factory()
    bucket = s3.create_bucket("reliability-s3-down")
    storage = s3.blob_store_table(bucket)
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}}, storage=storage)
    s3.stop()
    skopeo_copy(f"{mirror.host_port}/{REPO}/{small_image.name}:{small_image.tag}", tmp_path / "o")
    assert dir_manifest(tmp_path / "o") == small_image.manifest_bytes
    assert mirror.get("/readyz").status_code == 503
