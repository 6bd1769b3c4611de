"""Split deployment as operators run it: stateless frontends behind a real load balancer
(haproxy), separate cacher processes, one redis-server, one S3 bucket (moto's server)."""

from __future__ import annotations

import hashlib
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_py
import requests
from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures.distribution import Distribution
from tests.fixtures.haproxy import Haproxy
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache, pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.fixtures.s3_server import S3Server, bucket_name
from tests.fixtures.skopeo import dir_manifest, skopeo_copy

REPO = "docker-io"


@dataclass
class Cluster:
    s3: S3Server
    bucket: str
    redis: RedisServer
    frontends: list[Mirror] = field(default_factory=list)
    cachers: list[Mirror] = field(default_factory=list)
    balancer: Haproxy | None = None
    add_cacher: Callable[[], Mirror] = field(default=lambda: None)  # type: ignore[assignment,return-value]

    def stored_blobs(self) -> set[str]:
        return {
            "sha256:" + key.rsplit("/", 1)[1]
            for key in self.s3.object_names(self.bucket)
            if key.startswith("blobs/sha256/")
        }

    def wait_for_blobs(self, digests: set[str], deadline_s: float = 120.0) -> None:
        poll_until(
            lambda: digests <= self.stored_blobs(), deadline_s, what=f"{len(digests)} objects in S3"
        )

    def blob_bytes(self, digest: str) -> bytes:
        hex_ = digest.split(":", 1)[1]
        return (
            self.s3.client()
            .get_object(Bucket=self.bucket, Key=f"blobs/sha256/{hex_[:2]}/{hex_}")["Body"]
            .read()
        )


def repositories(upstream: Distribution) -> dict[str, Any]:
    return {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}


@pytest.fixture
def cluster_factory(
    mirror_factory: MirrorFactory,
    s3_server: S3Server,
    redis_server: RedisServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Any]:
    redis = redis_server
    balancers: list[Haproxy] = []

    def make(
        upstream: Distribution,
        *,
        frontends: int = 2,
        cachers: int = 2,
        queue: dict[str, Any] | None = None,
        cacher_repositories: dict[str, Any] | None = None,
        redirect: bool = True,
    ) -> Cluster:
        bucket = s3_server.create_bucket(bucket_name(request.node.name))
        storage = s3_server.blob_store_table(bucket)
        extra = {"queue": {"redis": queue or {}}}
        global_ = {"enable_blob_redirect": redirect}
        cluster = Cluster(s3_server, bucket, redis)
        for _ in range(frontends):
            cluster.frontends.append(
                mirror_factory(
                    repositories(upstream),
                    storage=storage,
                    redis_url=redis_server.url,
                    command="frontend",
                    extra=extra,
                    global_=global_,
                )
            )

        def add_cacher() -> Mirror:
            cacher = mirror_factory(
                cacher_repositories or repositories(upstream),
                storage=storage,
                redis_url=redis_server.url,
                command="cacher",
                extra=extra,
                global_=global_,
            )
            cluster.cachers.append(cacher)
            return cacher

        cluster.add_cacher = add_cacher
        for _ in range(cachers):
            add_cacher()
        if frontends > 1:
            cluster.balancer = Haproxy(tmp_path, [f.host_port for f in cluster.frontends]).start()
            balancers.append(cluster.balancer)
        return cluster

    yield make
    for balancer in balancers:
        balancer.stop()


def test_any_frontend_serves_what_any_cacher_stored_with_zero_upstream_requests(
    cluster_factory: Any, upstream: Distribution, pushed_images: PushedImageCache, tmp_path: Path
) -> None:
    image = pushed_images.get(upstream, "small", tag="2.0")
    cluster = cluster_factory(upstream)
    assert cluster.balancer is not None
    skopeo_copy(f"{cluster.balancer.host_port}/{REPO}/{image.name}:{image.tag}", tmp_path / "cold")
    assert dir_manifest(tmp_path / "cold") == image.manifest_bytes
    cluster.wait_for_blobs(image.all_digests)
    for digest in image.all_digests:
        assert hashlib.sha256(cluster.blob_bytes(digest)).hexdigest() == digest[7:]
    mark = upstream.mark()
    for index, frontend in enumerate(cluster.frontends):
        skopeo_copy(
            f"{frontend.host_port}/{REPO}/{image.name}:{image.tag}", tmp_path / f"warm{index}"
        )
        assert dir_manifest(tmp_path / f"warm{index}") == image.manifest_bytes
    assert upstream.settled_requests_since(mark) == []


def test_a_blob_hit_on_s3_is_a_redirect_to_a_presigned_url(
    cluster_factory: Any, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    cluster = cluster_factory(upstream, frontends=1, cachers=1)
    frontend = cluster.frontends[0]
    skopeo_copy(f"{frontend.host_port}/{REPO}/{small_image.name}:{small_image.tag}", tmp_path / "o")
    cluster.wait_for_blobs(small_image.all_digests)
    blob = small_image.largest_blob
    path = f"/v2/{REPO}/{small_image.name}/blobs/{blob.digest}"
    poll_until(
        lambda: frontend.get(path, allow_redirects=False).status_code == 307, 30, what="layer link"
    )
    response = frontend.get(path, allow_redirects=False)
    assert response.headers["Location"].startswith(cluster.s3.endpoint)
    assert requests.get(response.headers["Location"], timeout=30).content == blob.data


def test_a_blob_hit_on_s3_without_redirects_is_streamed_with_range_support(
    cluster_factory: Any, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    cluster = cluster_factory(upstream, frontends=1, cachers=1, redirect=False)
    frontend = cluster.frontends[0]
    skopeo_copy(f"{frontend.host_port}/{REPO}/{small_image.name}:{small_image.tag}", tmp_path / "o")
    cluster.wait_for_blobs(small_image.all_digests)
    blob = small_image.largest_blob
    path = f"/v2/{REPO}/{small_image.name}/blobs/{blob.digest}"
    poll_until(lambda: frontend.get(path).status_code == 200, 30, what="layer served")
    mark = upstream.mark()
    assert frontend.get(path).content == blob.data
    assert blob.data is not None
    partial = frontend.get(path, headers={"Range": "bytes=2-9"})
    assert partial.status_code == 206
    assert partial.content == blob.data[2:10]
    assert [r for r in upstream.settled_requests_since(mark) if r.method == "GET"] == []


@pytest.mark.timeout(600)
def test_a_cacher_killed_mid_blob_leaves_no_partial_object_and_another_cacher_finishes(
    cluster_factory: Any,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    redis_server: RedisServer,
) -> None:
    image = pushed_images.get(upstream, "large", tag="1.0", size_mib=100)
    layer = image.largest_blob
    # A short claim timeout so the survivor takes the dead cacher's job over quickly.
    cluster = cluster_factory(upstream, frontends=0, cachers=1, queue={"claim_timeout_secs": 3})
    doomed = cluster.cachers[0]
    # A job the cacher fetches and uploads itself (nothing staged by a frontend).
    enqueue_jobs(
        redis_server.url, [CacheJob(JobKind.BLOB, REPO, image.name, layer.digest, size=layer.size)]
    )
    poll_until(
        lambda: bool(cluster.s3.multipart_uploads(cluster.bucket)),
        120,
        what="the cacher's multipart upload of the layer",
    )
    doomed.stop(signal.SIGKILL)
    assert layer.digest not in cluster.stored_blobs()
    cluster.add_cacher()
    cluster.wait_for_blobs({layer.digest}, deadline_s=240)
    assert hashlib.sha256(cluster.blob_bytes(layer.digest)).hexdigest() == layer.digest[7:]


def test_pulls_keep_working_while_redis_is_down_and_caching_resumes_after(
    cluster_factory: Any,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # The cacher tries Redis again at most a second after it is back.
    cluster = cluster_factory(
        upstream, frontends=1, cachers=1, queue={"reconnect_backoff_max_secs": 1}
    )
    frontend = cluster.frontends[0]
    first = pushed_images.get(upstream, "small", name="split/redis-down", tag="1.0")
    redis_server.stop()
    skopeo_copy(f"{frontend.host_port}/{REPO}/{first.name}:{first.tag}", tmp_path / "down")
    assert dir_manifest(tmp_path / "down") == first.manifest_bytes
    ready = frontend.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["queue"].startswith("degraded")
    frontend.wait_for_log("caching degraded")
    assert frontend.log().count("caching degraded") == 1
    redis_server.start()
    poll_until(
        lambda: frontend.get("/readyz").json()["checks"]["queue"] == "ok", 30, what="queue back"
    )
    # No blob in common with the first: those are still served from the downloads made
    # while Redis was down (a spool answers late arrivals for a grace period).
    second = pushed_images.get(
        upstream, "large", name="split/redis-back", tag="1.0", size_mib=1, seed=18
    )

    def pulled_and_cached() -> bool:
        shutil.rmtree(tmp_path / "back", ignore_errors=True)
        skopeo_copy(f"{frontend.host_port}/{REPO}/{second.name}:{second.tag}", tmp_path / "back")
        return second.all_digests <= cluster.stored_blobs()

    poll_until(pulled_and_cached, 60, what="caching to resume")

    # The image pulled while Redis was down gets cached too when pulled again: its
    # downloads were not handed to any cache job, so they answer nobody any more.
    def first_cached() -> bool:
        shutil.rmtree(tmp_path / "again", ignore_errors=True)
        skopeo_copy(f"{frontend.host_port}/{REPO}/{first.name}:{first.tag}", tmp_path / "again")
        return first.all_digests <= cluster.stored_blobs()

    # Well within the spools' 30 s grace period: a fresh download, not a wait for expiry.
    poll_until(first_cached, 15, what="the image pulled during the outage to be cached")


def test_a_job_whose_upstream_keeps_failing_ends_in_the_dead_letter_stream(
    cluster_factory: Any,
    upstream: Distribution,
    unique_repo: str,
    redis_server: RedisServer,
    refused_url: str,
) -> None:
    image = pusher_for(upstream).large_image(unique_repo, "1.0", size_mib=1)
    dead_upstream = {REPO: {"upstream": [{"url": refused_url, "connect_timeout_secs": 1}]}}
    cluster = cluster_factory(
        upstream,
        frontends=1,
        cachers=1,
        queue={"max_attempts": 2, "retry_backoff_secs": 0.2},
        cacher_repositories=dead_upstream,
    )
    layer = image.largest_blob
    # As a frontend enqueues it when it could not stage the bytes: the cacher must fetch.
    enqueue_jobs(
        redis_server.url,
        [CacheJob(JobKind.BLOB, REPO, image.name, layer.digest, size=layer.size)],
    )

    def dead_lettered() -> bool:
        client = redis_py.Redis.from_url(redis_server.url)
        try:
            # bytes (decode_responses is off) and never None from XRANGE, which the stub allows
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]], client.xrange("simple-registry:dead")
            )
        finally:
            client.close()
        return any(layer.digest.encode() in fields.get(b"job", b"") for _, fields in entries)

    poll_until(dead_lettered, 60, what="the job in the dead-letter stream")
    assert layer.digest not in cluster.stored_blobs()
    assert "job dead-lettered" in cluster.cachers[0].log()


def test_on_s3_the_cacher_commits_what_the_frontend_streamed_without_fetching_it_again(
    cluster_factory: Any, distribution_factory: Any, unique_repo: str, tmp_path: Path
) -> None:
    upstream = distribution_factory()
    image = pusher_for(upstream).large_image(unique_repo, "1.0", size_mib=12)
    cluster = cluster_factory(upstream, frontends=1, cachers=1)
    frontend, cacher = cluster.frontends[0], cluster.cachers[0]
    mark = upstream.mark()
    skopeo_copy(f"{frontend.host_port}/{REPO}/{image.name}:{image.tag}", tmp_path / "o")
    cluster.wait_for_blobs(image.all_digests)
    layer = image.largest_blob
    gets = [
        r
        for r in upstream.settled_requests_since(mark)
        if r.method == "GET" and r.path.endswith(layer.digest)
    ]
    assert len(gets) == 1
    assert "committed staged blob" in cacher.log()
    assert hashlib.sha256(cluster.blob_bytes(layer.digest)).hexdigest() == layer.digest[7:]
    assert [k for k in cluster.s3.object_names(cluster.bucket) if k.startswith("_staging/")] == []
