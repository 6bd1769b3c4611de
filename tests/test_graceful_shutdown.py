"""SIGTERM as Kubernetes sends it: in-flight work finishes or is released, nothing partial."""

from __future__ import annotations

import hashlib
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures.distribution import Distribution
from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.mirror import MirrorFactory
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.fixtures.s3_server import S3Server, bucket_name
from tests.fixtures.skopeo import dir_manifest, skopeo_copy

REPO = "hub"


@pytest.fixture
def slow_upstream(
    distribution_factory: Any, faulty_proxy: Callable[..., FaultyProxy]
) -> tuple[Distribution, FaultyProxy]:
    upstream = distribution_factory()
    proxy = faulty_proxy(upstream.url)
    proxy.faults.throttle_bytes_per_sec = 6 * 1024 * 1024
    return upstream, proxy


def connection_refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.timeout(120)
def test_sigterm_lets_a_frontend_finish_its_stream_refuse_new_connections_and_exit_0(
    mirror_factory: MirrorFactory, slow_upstream: tuple[Distribution, FaultyProxy], unique_repo: str
) -> None:
    upstream, proxy = slow_upstream
    image = pusher_for(upstream).large_image(unique_repo, "1.0", size_mib=24)
    layer = image.largest_blob
    mirror = mirror_factory(
        {REPO: {"upstream": [{"url": proxy.url}]}}, extra={"server": {"drain_timeout_secs": 20}}
    )
    outcome: dict[str, Any] = {}

    def client() -> None:
        url = f"{mirror.url}/v2/{REPO}/{unique_repo}/blobs/{layer.digest}"
        with requests.get(url, stream=True, timeout=60) as response:
            outcome["body"] = b"".join(response.iter_content(256 * 1024))

    thread = threading.Thread(target=client)
    thread.start()
    poll_until(lambda: proxy.blob_bytes_sent > 2 * 1024 * 1024, 30, what="the stream to start")
    assert mirror.process is not None
    process = mirror.process
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    poll_until(lambda: connection_refused(mirror.port), 10, what="the listener to close")
    thread.join(60)
    code = process.wait(timeout=30)
    assert code == 0
    assert time.monotonic() - started < 20 + 5
    assert hashlib.sha256(outcome["body"]).hexdigest() == layer.digest[7:]


@pytest.mark.timeout(180)
def test_sigterm_mid_job_releases_the_job_to_another_cacher_and_leaves_no_partial_object(
    mirror_factory: MirrorFactory,
    slow_upstream: tuple[Distribution, FaultyProxy],
    s3_server: S3Server,
    redis_server: RedisServer,
    unique_repo: str,
    request: pytest.FixtureRequest,
) -> None:
    upstream, proxy = slow_upstream
    image = pusher_for(upstream).large_image(unique_repo, "1.0", size_mib=24)
    layer = image.largest_blob
    bucket = s3_server.create_bucket(bucket_name(request.node.name))
    storage = s3_server.blob_store_table(bucket)
    common: dict[str, Any] = {
        "storage": storage,
        "redis_url": redis_server.url,
        "extra": {
            "queue": {"redis": {"claim_timeout_secs": 2}},
            "server": {"drain_timeout_secs": 1},
        },
    }
    repositories = {REPO: {"upstream": [{"url": proxy.url}]}}
    cacher = mirror_factory(repositories, command="cacher", **common)
    # A job the cacher must fetch itself (the slow upstream keeps it busy for seconds).
    enqueue_jobs(
        redis_server.url,
        [CacheJob(JobKind.BLOB, REPO, unique_repo, layer.digest, size=layer.size)],
    )
    key = f"blobs/sha256/{layer.digest[7:9]}/{layer.digest[7:]}"
    poll_until(
        lambda: bool(s3_server.multipart_uploads(bucket)), 60, what="the cacher's upload to start"
    )
    assert cacher.stop(signal.SIGTERM) == 0
    assert key not in s3_server.object_names(bucket)
    assert "cacher draining" in cacher.log()
    mirror_factory(repositories, command="cacher", **common)
    poll_until(
        lambda: key in s3_server.object_names(bucket),
        120,
        what="the other cacher to finish the job",
    )
    stored = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == layer.digest[7:]


def test_a_registry_with_two_worker_processes_serves_pulls_and_stops_with_exit_0(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: Any, tmp_path: Any
) -> None:
    mirror = mirror_factory(
        {REPO: {"upstream": [{"url": upstream.url}]}}, extra={"server": {"workers": 2}}
    )
    for attempt in range(3):
        skopeo_copy(
            f"{mirror.host_port}/{REPO}/{small_image.name}:{small_image.tag}",
            tmp_path / f"o{attempt}",
        )
        assert dir_manifest(tmp_path / f"o{attempt}") == small_image.manifest_bytes
    assert "started 2 worker processes" in mirror.log()
    assert mirror.stop(signal.SIGTERM) == 0
