"""The standalone cacher against a real Redis and a real (throttled) upstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.mirror import MirrorFactory
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs


def test_a_cacher_runs_at_most_max_concurrent_cache_jobs_fetches_at_once(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    redis_server: RedisServer,
    unique_repo: str,
    faulty_proxy: Callable[..., FaultyProxy],
) -> None:
    upstream = distribution_factory()
    pusher = pusher_for(upstream)
    images = [pusher.large_image(f"{unique_repo}-{i}", "1.0", size_mib=2, seed=i) for i in range(6)]
    proxy = faulty_proxy(upstream.url)
    proxy.faults.throttle_bytes_per_sec = 4 * 1024 * 1024
    cacher = mirror_factory(
        {"hub": {"upstream": [{"url": proxy.url}]}},
        command="cacher",
        redis_url=redis_server.url,
        global_={"max_concurrent_cache_jobs": 2},
    )
    layers = [image.largest_blob for image in images]
    jobs = [
        CacheJob(
            kind=JobKind.BLOB,
            repository="hub",
            remote_name=image.name,
            digest=layer.digest,
            size=layer.size,
        )
        for image, layer in zip(images, layers, strict=True)
    ]
    enqueue_jobs(redis_server.url, jobs)
    cacher.wait_for_blobs({layer.digest for layer in layers}, deadline_s=60)
    assert proxy.max_in_flight == 2
    # Idempotent: the same jobs again are acknowledged without a fetch.
    fetched = proxy.count("GET", "/blobs/")
    enqueue_jobs(redis_server.url, jobs)
    poll_until(
        lambda: cacher.log().count("outcome=already-stored") >= len(jobs),
        30,
        what="re-run jobs",
    )
    assert proxy.count("GET", "/blobs/") == fetched
