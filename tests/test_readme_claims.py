"""What the README promises and no other module shows: manifest digests checked against a
corrupting upstream, every client of a corrupted download aborted, the circuit breaker's
probe after its cooldown, traffic resuming after a 429's Retry-After, `server` with
`[queue.redis]`, `sync_to_disk`, the retry back-off cap, and every documented metric.

Faults no real upstream produces on demand come from `FaultyProxy` in front of a real
Distribution; everything else is the real thing (the registry's processes, Redis, strace
watching the registry's system calls)."""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
import requests
from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures.distribution import Distribution
from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.idle import wait_until_idle
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, metric_sample, upstream_entry
from tests.fixtures.oci import MANIFEST_ACCEPT
from tests.fixtures.plugin import ProxiedLayer, pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.fixtures.skopeo import dir_manifest, skopeo_copy

REPO = "hub"
ACCEPT = MANIFEST_ACCEPT  # every manifest type, as pulling clients send


@pytest.fixture
def proxy(upstream: Distribution, faulty_proxy: Callable[..., FaultyProxy]) -> FaultyProxy:
    """A fault-injecting proxy in front of the shared upstream."""
    return faulty_proxy(upstream.url)


def through(mirror_factory: MirrorFactory, proxy: FaultyProxy, **options: Any) -> Mirror:
    return mirror_factory({REPO: {"upstream": [{"url": proxy.url}]}}, **options)


def manifest_gets(proxy: FaultyProxy) -> int:
    return proxy.count(contains="/manifests/")


class Download(threading.Thread):
    """One client reading a blob to the end (or to its failure) in the background."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.status: int | None = None
        self.received = 0
        self.hasher = hashlib.sha256()
        self.error: Exception | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            with requests.get(self.url, stream=True, timeout=20) as response:
                self.status = response.status_code
                for chunk in response.iter_content(256 * 1024):
                    self.received += len(chunk)
                    self.hasher.update(chunk)
        except requests.RequestException as error:
            self.error = error
        finally:
            self.ended_at = time.monotonic()


# -- digests ------------------------------------------------------------------------------


def test_a_manifest_that_does_not_match_its_digest_is_refused_and_nothing_is_cached(
    mirror_factory: MirrorFactory, proxy: FaultyProxy, small_image: PushedImage
) -> None:
    mirror = through(mirror_factory, proxy)
    name = f"{REPO}/{small_image.name}"
    proxy.faults.corrupt_manifests = True
    # By tag, the upstream's Docker-Content-Digest names what the bytes must hash to.
    by_tag = mirror.get(f"/v2/{name}/manifests/{small_image.tag}", headers={"Accept": ACCEPT})
    # By digest, the digest asked for does (here without any header to compare with).
    proxy.faults.drop_digest_header = True
    by_digest = mirror.get(f"/v2/{name}/manifests/{small_image.digest}", headers={"Accept": ACCEPT})
    for answer in (by_tag, by_digest):
        assert answer.status_code == 503
        assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert manifest_gets(proxy) == 2  # both reached the upstream and were checked
    assert mirror.log().count("manifest digest mismatch") >= 2
    wait_until_idle()
    assert mirror.stored_blobs() == set()
    assert not (mirror.data_root / "repositories").exists()
    # Nothing wrong was remembered either: the upstream's good bytes come through at once.
    proxy.faults.corrupt_manifests = proxy.faults.drop_digest_header = False
    good = mirror.get(f"/v2/{name}/manifests/{small_image.tag}", headers={"Accept": ACCEPT})
    assert good.status_code == 200
    assert good.content == small_image.manifest_bytes


def test_a_corrupted_blob_aborts_every_client_sharing_its_download_and_is_not_cached(
    mirror_factory: MirrorFactory, proxied_layer: Callable[..., ProxiedLayer]
) -> None:
    served = proxied_layer(8, bytes_per_sec=4 * 1024 * 1024)  # about two seconds
    proxy, layer = served.proxy, served.layer
    proxy.faults.corrupt_blobs = True
    mirror = through(mirror_factory, proxy)
    url = f"{mirror.url}/v2/{REPO}/{served.name}/blobs/{layer.digest}"
    first = Download(url)
    first.start()
    poll_until(lambda: proxy.blob_bytes_sent > 0, 30, what="the download to start")
    others = [Download(url) for _ in range(3)]
    for client in others:
        client.start()
    clients = [first, *others]
    for client in clients:
        client.join(60)
    for index, client in enumerate(clients):
        assert client.status == 200, f"client {index}"
        assert client.error is not None, f"client {index} finished cleanly"
        assert client.received < layer.size, f"client {index} got every byte"
        # Aborted with the others, not left waiting for bytes until its read timeout.
        assert "timed out" not in str(client.error).lower(), f"client {index}: {client.error}"
        assert client.ended_at is not None and first.ended_at is not None
        assert abs(client.ended_at - first.ended_at) < 10, f"client {index} ended late"
    assert proxy.count("GET", layer.digest) == 1  # one download shared by all four
    assert mirror.metric("registry_cache_lookups_total", kind="blob", result="coalesced") == 3
    wait_until_idle()
    assert layer.digest not in mirror.stored_blobs()
    assert mirror.temp_files() == []


# -- upstream health ----------------------------------------------------------------------


def test_after_the_cooldown_one_probe_at_a_time_reaches_the_upstream_until_traffic_resumes(
    mirror_factory: MirrorFactory, proxy: FaultyProxy, small_image: PushedImage
) -> None:
    proxy.faults.answer = (503, {})
    proxy.faults.answer_filter = lambda method, path: "/manifests/" in path
    proxy.faults.answer_delay_secs = 0.3  # a probe is still in flight when others arrive
    mirror = through(
        mirror_factory,
        proxy,
        global_={"upstream_failure_threshold": 2, "upstream_cooldown_secs": 2},
    )
    base = f"/v2/{REPO}/{small_image.name}/manifests"
    path = f"{base}/{small_image.tag}"
    tags = itertools.count()

    def others(count: int = 4) -> list[str]:
        """Pulls of tags not asked before: none shares another's upstream request."""
        return [f"{base}/other-{next(tags)}" for _ in range(count)]

    def burst(paths: list[str]) -> tuple[list[int], int]:
        """Statuses of concurrent pulls, and how many of them reached the upstream."""
        before = manifest_gets(proxy)
        with ThreadPoolExecutor(len(paths)) as pool:
            statuses = list(pool.map(lambda p: mirror.get(p).status_code, paths))
        return statuses, manifest_gets(proxy) - before

    assert [mirror.get(path).status_code for _ in range(2)] == [503, 503]
    assert manifest_gets(proxy) == 2
    # The circuit is open: skipped, not asked.
    assert mirror.get(path).status_code == 503
    assert manifest_gets(proxy) == 2

    probes: list[int] = []

    def probed() -> bool:
        statuses, reached = burst(others())
        assert statuses == [503] * 4
        probes.append(reached)
        return reached > 0

    poll_until(probed, 15, what="a probe after the cooldown")
    assert max(probes) == 1, f"more than one request at a time while open: {probes}"
    # The probe failed: open again, skipped again (the upstream is not asked).
    before = manifest_gets(proxy)
    assert mirror.get(path).status_code == 503
    assert manifest_gets(proxy) == before

    proxy.faults.answer = None  # the upstream is back
    poll_until(lambda: mirror.get(path).status_code == 200, 15, what="a probe that succeeds")
    # Closed again: pulls of what is not cached all go to the upstream (which has none).
    statuses, reached = burst(others())
    assert statuses == [404] * 4
    assert reached == 4


def test_traffic_to_a_rate_limiting_upstream_resumes_once_its_retry_after_has_passed(
    mirror_factory: MirrorFactory, proxy: FaultyProxy, small_image: PushedImage
) -> None:
    proxy.faults.answer = (429, {"Retry-After": "2"})
    mirror = through(mirror_factory, proxy)
    path = f"/v2/{REPO}/{small_image.name}/manifests/{small_image.tag}"
    limited = mirror.get(path, headers={"Accept": ACCEPT})
    assert limited.status_code == 429
    limited_at = proxy.arrivals[-1]
    proxy.faults.answer = None  # the upstream would answer now, but it asked for 2 s
    waiting = mirror.get(path, headers={"Accept": ACCEPT})
    assert waiting.status_code == 429
    assert waiting.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 0 < int(waiting.headers["Retry-After"]) <= 2
    assert len(proxy.requests) == 1
    poll_until(
        lambda: mirror.get(path, headers={"Accept": ACCEPT}).status_code == 200,
        15,
        what="pulls to work again after Retry-After",
    )
    assert len(proxy.requests) == 2  # the first request that was let through succeeded
    assert proxy.arrivals[1] - limited_at >= 1.95
    resumed = mirror.get(path, headers={"Accept": ACCEPT})
    assert resumed.content == small_image.manifest_bytes


# -- the queue ------------------------------------------------------------------------------


def test_server_mode_with_queue_redis_caches_through_redis_and_reports_degraded_caching(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    redis_server: RedisServer,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    mirror = mirror_factory(
        {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}},
        redis_url=redis_server.url,
    )
    skopeo_copy(f"{mirror.host_port}/{REPO}/{small_image.name}:{small_image.tag}", tmp_path / "a")
    wait_until_idle()
    assert mirror.stored_blobs() >= small_image.all_digests
    assert "queue=redis" in mirror.log()
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        stream = client.xinfo_stream("simple-registry:jobs")
    finally:
        client.close()
    # One job per manifest and blob went through Redis, and each was acknowledged.
    assert stream["entries-added"] == 1 + len(small_image.blobs)
    assert stream["length"] == 0
    assert mirror.metric("registry_caching_degraded") == 0

    pusher = pusher_for(upstream)
    while_down = pusher.small_image(f"{unique_repo}/down", "1.0", content=b"while down\n")
    redis_server.stop()
    skopeo_copy(f"{mirror.host_port}/{REPO}/{while_down.name}:1.0", tmp_path / "b")
    assert dir_manifest(tmp_path / "b") == while_down.manifest_bytes
    poll_until(lambda: mirror.metric("registry_caching_degraded") == 1, 15, what="degraded")
    redis_server.start()
    poll_until(lambda: mirror.get("/readyz").json()["checks"]["queue"] == "ok", 30, what="Redis")
    after = pusher.small_image(f"{unique_repo}/after", "1.0", content=b"after\n")
    skopeo_copy(f"{mirror.host_port}/{REPO}/{after.name}:1.0", tmp_path / "c")
    poll_until(lambda: mirror.metric("registry_caching_degraded") == 0, 15, what="resumed")
    mirror.wait_for_blobs(after.all_digests)


def test_job_retries_back_off_exponentially_up_to_retry_backoff_max_secs(
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
    small_image: PushedImage,
    refused_url: str,
) -> None:
    queue = {"max_attempts": 5, "retry_backoff_secs": 0.2, "retry_backoff_max_secs": 0.4}
    cacher = mirror_factory(
        {REPO: {"upstream": [{"url": refused_url, "connect_timeout_secs": 1}]}},
        command="cacher",
        redis_url=redis_server.url,
        extra={"queue": {"redis": queue}},
    )
    blob = small_image.largest_blob
    enqueue_jobs(
        redis_server.url,
        [CacheJob(JobKind.BLOB, REPO, small_image.name, blob.digest, size=blob.size)],
    )
    cacher.wait_for_log("job dead-lettered")
    delays = [float(d) for d in re.findall(r"job failed .* retry_in=([\d.]+)s", cacher.log())]
    # Uncapped: 0.2, 0.4, 0.8, 1.6 (each within +-20% jitter); capped at 0.4.
    assert len(delays) == 4, cacher.log()
    assert delays[0] <= 0.25
    assert all(delay <= 0.4 * 1.2 + 0.05 for delay in delays), delays
    assert all(delay >= 0.4 * 0.8 - 0.05 for delay in delays[1:]), delays


def test_a_cacher_that_cannot_reach_redis_tries_again_at_most_reconnect_backoff_max_secs_apart(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    redis_server: RedisServer,
) -> None:
    cacher = mirror_factory(
        {REPO: {"upstream": [upstream_entry(upstream)]}},
        command="cacher",
        redis_url=redis_server.url,
        extra={"queue": {"redis": {"reconnect_backoff_max_secs": 1}}},
    )
    redis_server.stop()

    def waits() -> list[float]:
        return [
            float(w) for w in re.findall(r"reach the queue .*retrying in ([\d.]+)s", cacher.log())
        ]

    # Uncapped the waits would double: 0.5, 1, 2, 4.
    poll_until(lambda: len(waits()) >= 4, 15, what="four attempts to reach Redis")
    assert waits()[:4] == [0.5, 1.0, 1.0, 1.0]
    redis_server.start()
    blob = small_image.largest_blob
    enqueue_jobs(
        redis_server.url,
        [CacheJob(JobKind.BLOB, REPO, small_image.name, blob.digest, size=blob.size)],
    )
    cacher.wait_for_blobs({blob.digest}, deadline_s=10)


# -- storage ----------------------------------------------------------------------------------

_FSYNC = re.compile(r"^\d+ +f(?:data)?sync\(\d+<(?P<path>[^>]*)>")
_RENAME = re.compile(
    r'^\d+ +rename(?:at2?)?\((?:[^,]*, )?"(?P<source>[^"]+)", (?:[^,]*, )?"(?P<target>[^"]+)"'
)


def committed_files(root: Path) -> list[Path]:
    """Every committed object: blobs and the records under repositories/."""
    return [p for top in ("blobs", "repositories") for p in (root / top).rglob("*") if p.is_file()]


@pytest.mark.parametrize("sync_to_disk", [True, False], ids=["sync", "no-sync"])
def test_sync_to_disk_fsyncs_each_committed_file_before_its_rename_and_its_folder_after(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    tmp_path: Path,
    sync_to_disk: bool,
) -> None:
    strace = shutil.which("strace")
    assert strace is not None, "strace is missing: install Debian's strace (scripts/test does)"
    mirror = mirror_factory(
        {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}},
        storage={"fs": {"root_dir": str(tmp_path / "data"), "sync_to_disk": sync_to_disk}},
    )
    assert mirror.process is not None
    trace, said = tmp_path / "strace.txt", tmp_path / "strace.err"
    with said.open("wb") as stderr:
        tracer = subprocess.Popen(
            [strace, "-f", "-y", "-s", "4096", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
             "-o", str(trace), "-p", str(mirror.process.pid)],
            stderr=stderr,
        )  # fmt: skip
    try:
        poll_until(lambda: "attached" in said.read_text(), 10, what="strace to attach")
        skopeo_copy(
            f"{mirror.host_port}/{REPO}/{small_image.name}:{small_image.tag}", tmp_path / "o"
        )
        wait_until_idle()
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches, the registry runs on
        tracer.wait(10)
    lines = trace.read_text().splitlines()
    fsynced = [(i, m["path"]) for i, line in enumerate(lines) if (m := _FSYNC.match(line))]
    renamed = [
        (i, m["source"], m["target"]) for i, line in enumerate(lines) if (m := _RENAME.match(line))
    ]
    files = committed_files(mirror.data_root)
    assert len(files) >= len(small_image.all_digests) + 2  # + the tag and the revision
    if not sync_to_disk:
        assert [path for _, path in fsynced if str(mirror.data_root) in path] == []
        return
    for file in files:
        (at, source) = next((i, s) for i, s, t in renamed if t == str(file))
        assert any(i < at and path == source for i, path in fsynced), f"{source} unsynced"
        assert any(i > at and path == str(file.parent) for i, path in fsynced), f"{file.parent}"


# -- metrics ---------------------------------------------------------------------------------


def test_every_documented_metric_counts_what_it_names_without_names_or_digests(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    unique_repo: str,
    tmp_path: Path,
    faulty_proxy: Callable[..., FaultyProxy],
) -> None:
    upstream = distribution_factory()
    pusher = pusher_for(upstream)
    small = pusher.small_image(f"{unique_repo}/small", "latest")
    layer = pusher.large_image(f"{unique_repo}/large", "1.0", size_mib=8).largest_blob
    proxy = faulty_proxy(upstream.url)
    proxy.faults.extra_headers = {"ratelimit-remaining": "76;w=21600"}
    mirror = through(mirror_factory, proxy)  # mutable tags: a warm pull revalidates
    reference = f"{mirror.host_port}/{REPO}/{small.name}:latest"
    skopeo_copy(reference, tmp_path / "cold")  # manifest and blobs: misses
    wait_until_idle()
    skopeo_copy(reference, tmp_path / "warm")  # revalidated manifest, blob hits
    # One slow download, shared by a second client: a stream in flight, then coalesced.
    proxy.faults.throttle_bytes_per_sec = 4 * 1024 * 1024
    url = f"{mirror.url}/v2/{REPO}/{unique_repo}/large/blobs/{layer.digest}"
    first = Download(url)
    first.start()
    poll_until(lambda: mirror.metric("registry_upstream_streams_in_flight") == 1, 30, what="stream")
    second = Download(url)
    second.start()
    for client in (first, second):
        client.join(60)
        assert client.error is None and client.hasher.hexdigest() == layer.digest[7:]
    proxy.faults.throttle_bytes_per_sec = None
    proxy.faults.answer = (503, {})  # the upstream goes down: a stale answer
    stale = mirror.get(f"/v2/{REPO}/{small.name}/manifests/latest", headers={"Accept": ACCEPT})
    assert stale.status_code == 200 and "Warning" in stale.headers
    wait_until_idle()
    text = mirror.metrics()

    def value(name: str, **labels: str) -> float:
        return metric_sample(text, name, **labels)

    small_bytes = sum(blob.size for blob in small.blobs)
    blobs = len(small.blobs)
    lookups = "registry_cache_lookups_total"
    assert value(lookups, kind="manifest", result="miss") == 1
    assert value(lookups, kind="manifest", result="revalidated") == 1
    assert value(lookups, kind="manifest", result="stale") == 1
    assert value(lookups, kind="blob", result="miss") == blobs + 2
    assert value(lookups, kind="blob", result="hit") == blobs
    assert value(lookups, kind="blob", result="coalesced") == 1
    host = f"127.0.0.1:{proxy.port}"
    # Every request the upstream saw, and every byte it sent (manifest and blobs).
    assert value("registry_upstream_requests_total", upstream=host) == len(proxy.requests)
    assert value("registry_upstream_requests_total", upstream=host, method="HEAD") == 2
    assert value("registry_upstream_bytes_total", upstream=host) == (
        len(small.manifest_bytes) + small_bytes + layer.size
    )
    assert value("registry_upstream_ratelimit_remaining", upstream=host) == 76
    assert value("registry_bytes_served_total", source="upstream") == small_bytes + 2 * layer.size
    assert value("registry_bytes_served_total", source="cache") == small_bytes
    assert value("registry_upstream_streams_in_flight") == 0
    blob_gets = 2 * blobs + 2
    assert value("registry_http_requests_total", route="blob", method="GET", status="200") == (
        blob_gets
    )
    assert value("registry_http_request_duration_seconds_count", route="blob", method="GET") == (
        blob_gets
    )
    assert value("registry_cache_jobs_total", kind="manifest", outcome="stored") == 1
    assert value("registry_cache_jobs_total", kind="blob", outcome="stored") == blobs + 1
    assert value("registry_cache_job_duration_seconds_count", kind="manifest") == 1
    assert value("registry_cache_job_duration_seconds_count", kind="blob") == blobs + 1
    assert value("registry_cache_queue_depth") == 0
    assert value("registry_caching_degraded") == 0
    for private in (unique_repo, small.digest[7:], layer.digest[7:]):
        assert private not in text
