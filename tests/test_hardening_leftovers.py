"""Nothing left behind (issue 12, item 11), on real processes sharing one storage folder:
a partial spool of a frontend killed with -9 is gone after a restart while a live
frontend's spool is untouched; a write that fails at its last flush leaves no temp file; a
failed spool goes at once; a cacher's temp file survives another cacher's sweep while its
writer lives and goes at the next start-up after `kill -9`."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.images import build_small_image
from tests.fixtures.mirror import Mirror, MirrorFactory
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs


def spool_files(staging: Path, pid: int | None = None) -> list[Path]:
    """Spool files in the owner folders (of the process `pid`, if given)."""
    found = []
    for folder in staging.iterdir() if staging.is_dir() else []:
        if folder.is_dir() and (pid is None or f"-{pid}-" in folder.name):
            found += [p for p in folder.rglob("*") if p.is_file()]
    return found


def staged_files(staging: Path) -> list[Path]:
    """Files in the staging folder itself (handed over to the cacher), lock files aside."""
    return [p for p in staging.glob("*") if p.is_file() and not p.name.endswith(".lock")]


def pull_in_background(url: str, outcome: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            with requests.get(url, stream=True, timeout=120) as response:
                digest = hashlib.sha256()
                for chunk in response.iter_content(256 * 1024):
                    digest.update(chunk)
                outcome["sha256"] = "sha256:" + digest.hexdigest()
        except requests.RequestException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_partial_spool_of_a_killed_frontend_is_removed_at_restart_and_a_live_ones_is_not(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    unique_repo: str,
    faulty_proxy: Callable[..., FaultyProxy],
    tmp_path: Path,
) -> None:
    private = distribution_factory()
    pusher = pusher_for(private)
    killed_image = pusher.large_image(f"{unique_repo}-a", "1.0", size_mib=8, seed=1)
    live_image = pusher.large_image(f"{unique_repo}-b", "1.0", size_mib=8, seed=2)
    proxy = faulty_proxy(private.url)
    proxy.faults.throttle_bytes_per_sec = 1024 * 1024
    shared = tmp_path / "shared"
    repositories = {"hub": {"upstream": [{"url": proxy.url}]}}
    doomed = mirror_factory(repositories, root=shared)
    live = mirror_factory(repositories, root=shared)
    staging = doomed.data_root / "_staging"
    assert doomed.process is not None and live.process is not None
    doomed_pid, live_pid = doomed.process.pid, live.process.pid

    lost: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    layer = live_image.largest_blob
    pull_in_background(
        f"{doomed.url}/v2/hub/{killed_image.name}/blobs/{killed_image.largest_blob.digest}", lost
    )
    live_pull = pull_in_background(
        f"{live.url}/v2/hub/{live_image.name}/blobs/{layer.digest}", kept
    )
    poll_until(
        lambda: (
            any(p.stat().st_size > 0 for p in spool_files(staging, doomed_pid))
            and bool(spool_files(staging, live_pid))
        ),
        30,
        what="both frontends spooling",
    )
    doomed.stop(signal.SIGKILL)
    assert spool_files(staging, doomed_pid), "the kill left a partial spool"

    restarted = mirror_factory(repositories, root=shared)
    poll_until(
        lambda: (
            not spool_files(staging, doomed_pid)
            and not any(f"-{doomed_pid}-" in p.name for p in staging.iterdir())
        ),
        30,
        what="the dead frontend's spool folder and lock removed",
        log_path=restarted.log_path,
    )
    # The live frontend's download went on untouched, and completes into the cache.
    live_pull.join(120)
    assert kept.get("sha256") == layer.digest, kept
    live.wait_for_blobs({layer.digest})
    assert restarted.temp_files() == []


def test_a_failed_spool_is_removed_at_once_not_at_the_next_miss(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    unique_repo: str,
    faulty_proxy: Callable[..., FaultyProxy],
) -> None:
    private = distribution_factory()
    image = pusher_for(private).large_image(unique_repo, "1.0", size_mib=2)
    proxy = faulty_proxy(private.url)
    proxy.faults.corrupt_blobs = True
    mirror = mirror_factory({"hub": {"upstream": [{"url": proxy.url}]}})
    staging = mirror.data_root / "_staging"
    url = f"{mirror.url}/v2/hub/{unique_repo}/blobs/{image.largest_blob.digest}"
    for attempt in range(5):
        with (
            pytest.raises(requests.RequestException),
            requests.get(url, stream=True, timeout=60) as response,
        ):
            for _ in response.iter_content(256 * 1024):
                pass
        poll_until(
            lambda: spool_files(staging) == [] and staged_files(staging) == [],
            5,
            what=f"failed spool {attempt} removed",
        )
    assert image.largest_blob.digest not in mirror.stored_blobs()


def _cacher(
    mirror_factory: MirrorFactory, proxy: FaultyProxy, redis_server: RedisServer, root: Path
) -> Mirror:
    return mirror_factory(
        {"hub": {"upstream": [{"url": proxy.url}]}},
        command="cacher",
        redis_url=redis_server.url,
        root=root,
    )


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "~tmp~" in p.name]


def test_a_write_that_fails_at_its_last_flush_leaves_no_temp_file(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    redis_server: RedisServer,
    unique_repo: str,
    faulty_proxy: Callable[..., FaultyProxy],
    tmp_path: Path,
) -> None:
    private = distribution_factory()
    # One layer of about 600 KiB: below the writer's 1 MiB buffer, so every byte is written
    # at commit, the final flush.
    image = pusher_for(private).push(unique_repo, "1.0", build_small_image(os.urandom(600 * 1024)))
    layer = image.largest_blob
    proxy = faulty_proxy(private.url)
    cacher = _cacher(mirror_factory, proxy, redis_server, tmp_path)
    assert cacher.process is not None
    # Files may grow to 200 KiB only: the "disk" is full for the layer.
    _soft, hard = resource.prlimit(cacher.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(cacher.process.pid, resource.RLIMIT_FSIZE, (200 * 1024, hard))
    enqueue_jobs(
        redis_server.url, [CacheJob(JobKind.BLOB, "hub", unique_repo, layer.digest, layer.size)]
    )
    poll_until(
        lambda: cacher.log().count("job failed kind=blob") >= 2,
        60,
        what="two failed attempts",
        log_path=cacher.log_path,
    )
    assert "File too large" in cacher.log()
    assert temp_files(cacher.data_root) == []
    assert layer.digest not in cacher.stored_blobs()


def test_a_live_cachers_temp_file_survives_a_sweep_and_a_killed_ones_goes_at_the_next_start(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    redis_server: RedisServer,
    unique_repo: str,
    faulty_proxy: Callable[..., FaultyProxy],
    tmp_path: Path,
) -> None:
    private = distribution_factory()
    image = pusher_for(private).large_image(unique_repo, "1.0", size_mib=8)
    layer = image.largest_blob
    proxy = faulty_proxy(private.url)
    proxy.faults.throttle_bytes_per_sec = 1024 * 1024
    writer = _cacher(mirror_factory, proxy, redis_server, tmp_path)
    enqueue_jobs(
        redis_server.url, [CacheJob(JobKind.BLOB, "hub", unique_repo, layer.digest, layer.size)]
    )
    poll_until(lambda: bool(temp_files(writer.data_root)), 30, what="the writer's temp file")
    (temp,) = temp_files(writer.data_root)

    sweeper = _cacher(mirror_factory, proxy, redis_server, tmp_path)
    sweeper.wait_for_log("temp-file sweep done")
    assert temp.exists(), "a live writer's temp file was swept"

    writer.stop(signal.SIGKILL)
    assert temp.exists()
    restarted = _cacher(mirror_factory, proxy, redis_server, tmp_path)
    restarted.wait_for_log("temp-file sweep done: removed 1")
    assert not temp.exists()
