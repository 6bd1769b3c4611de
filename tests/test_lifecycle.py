"""The cache lifecycle through running processes: a budget past which the least recently
pulled images go, retention rules applied by the cacher, prune and scrub beside live
pulls, split mode with a pruning cacher killed, `scrub --verify`, and deletes — each
checked against what the upstream (CNCF Distribution) saw and what is left in storage."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import (
    REGISTRY_COMMAND,
    Mirror,
    MirrorFactory,
    metric_sample,
    upstream_entry,
)
from tests.fixtures.oci import MANIFEST_ACCEPT
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.s3_server import S3Server, bucket_name

REPO = "docker-io"
MiB = 1024 * 1024


def repositories(upstream: Distribution, **extra: Any) -> dict[str, Any]:
    return {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)], **extra}}


def lifecycle_config(**eviction: Any) -> dict[str, Any]:
    """update_pull_time on, background lifecycle off unless asked, no grace by default."""
    return {
        "eviction": {
            "interval_secs": 0,
            "blob_grace_secs": 0,
            "pull_time_resolution_secs": 1,
            **eviction,
        }
    }


def images(pushed: PushedImageCache, upstream: Distribution, count: int) -> list[PushedImage]:
    """`count` images of one unique 1 MiB layer each."""
    return [
        pushed.get(upstream, "large", name=f"lc/image{index}", tag="1.0", size_mib=1, seed=index)
        for index in range(count)
    ]


def pull(base_url: str, image: PushedImage, *, reference: str | None = None) -> None:
    """A client's pull by plain HTTP: the manifest, then every blob, each checked against
    its digest (an index: every child too)."""
    session = requests.Session()
    name = f"{REPO}/{image.name}"
    wanted = [(reference or image.tag, image.digest)]
    while wanted:
        ref, digest = wanted.pop()
        response = session.get(
            f"{base_url}/v2/{name}/manifests/{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=60,
        )
        assert response.status_code == 200, (ref, response.status_code, response.text[:300])
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
        manifest = response.json()
        wanted += [(child["digest"], child["digest"]) for child in manifest.get("manifests", [])]
        for blob in [manifest.get("config"), *manifest.get("layers", [])]:
            if blob is None:
                continue
            got = session.get(f"{base_url}/v2/{name}/blobs/{blob['digest']}", timeout=60)
            assert got.status_code == 200, (blob["digest"], got.status_code)
            assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob["digest"]


def settle(mirror: Mirror, image: PushedImage) -> None:
    mirror.wait_for_blobs(image.all_digests)
    mirror.wait_for_tag(f"{REPO}/{image.name}", image.tag)
    mirror.wait_for_links(f"{REPO}/{image.name}", set(image.blob_digests))


def cli(mirror: Mirror, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`simple-registry -c <the mirror's config> ARGS`, beside the running mirror."""
    return subprocess.run(
        [*REGISTRY_COMMAND, "-c", str(mirror.config_path), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=mirror.workdir,
        check=False,
    )


def pull_time(mirror: Mirror, image: PushedImage) -> float:
    path = mirror.data_root / "repositories" / REPO / image.name / "_pulls" / "tags" / image.tag
    return float(json.loads(path.read_bytes())["pulled_at"]) if path.exists() else 0.0


def stored_bytes(mirror: Mirror) -> int:
    return sum(p.stat().st_size for p in (mirror.data_root / "blobs").rglob("*") if p.is_file())


def upstream_gets(upstream: Distribution, mark: int) -> list[str]:
    return [e.path for e in upstream.settled_requests_since(mark) if e.method == "GET"]


# -- the budget -----------------------------------------------------------------------------


def test_past_the_budget_the_least_recently_pulled_images_go_and_the_rest_stay_warm(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
) -> None:
    first, second, third, fourth = images(pushed_images, upstream, 4)
    budget = int(2.5 * MiB)
    mirror = mirror_factory(
        repositories(upstream),
        global_={"update_pull_time": True},
        extra=lifecycle_config(max_size=f"{budget}B"),
    )
    for image in (first, second, third, fourth):
        pull(mirror.url, image)
        settle(mirror, image)
    pull(mirror.url, first)  # the first image is the most recently pulled now
    poll_until(
        lambda: pull_time(mirror, first) > pull_time(mirror, fourth) > pull_time(mirror, third) > 0,
        30,
        what="pull times recorded in pull order",
    )
    assert stored_bytes(mirror) > 4 * MiB

    result = cli(mirror, "prune")
    assert result.returncode == 0, result.stderr
    assert f"{REPO}/{second.name}:1.0 (budget" in result.stdout
    assert f"{REPO}/{third.name}:1.0 (budget" in result.stdout
    assert first.name not in result.stdout and fourth.name not in result.stdout
    assert stored_bytes(mirror) <= budget
    usage = json.loads((mirror.data_root / "_lifecycle" / "usage").read_bytes())
    assert usage["total_bytes"] == stored_bytes(mirror) <= budget
    assert mirror.stored_blobs() == first.all_digests | fourth.all_digests

    # The recently pulled images are still served from the cache, with no upstream request.
    mark = upstream.mark()
    pull(mirror.url, first)
    pull(mirror.url, fourth)
    assert upstream_gets(upstream, mark) == []

    # An evicted image pulls again, from the upstream, correctly — not from memory.
    mark = upstream.mark()
    pull(mirror.url, second)
    fetched = upstream_gets(upstream, mark)
    assert f"/v2/{second.name}/manifests/1.0" in fetched
    assert f"/v2/{second.name}/blobs/{second.largest_blob.digest}" in fetched
    settle(mirror, second)
    assert second.all_digests <= mirror.stored_blobs()


# -- retention, run by the cacher -----------------------------------------------------------


def test_the_cacher_applies_retention_rules_and_a_rule_that_fails_keeps_its_tag(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
) -> None:
    tags = {
        tag: pushed_images.get(upstream, "small", name="lc/retain", tag=tag, content=tag.encode())
        for tag in ("keep", "odd", "drop")
    }
    rules = [
        'image.tag == "keep"',
        'image.tag == "odd" && int(image.tag) > 0',  # int("odd") fails: kept, with a warning
    ]
    mirror = mirror_factory(
        repositories(upstream),
        global_={"retention_policy": {"rules": rules}},
        extra=lifecycle_config(interval_secs=1),
    )
    for image in tags.values():
        pull(mirror.url, image)
    name = f"{REPO}/lc/retain"
    tag_dir = mirror.data_root / "repositories" / name / "_manifests" / "tags"
    poll_until(lambda: not (tag_dir / "drop").exists(), 60, what="the cacher to prune :drop")
    poll_until(
        lambda: tags["drop"].largest_blob.digest not in mirror.stored_blobs(),
        30,
        what="the dropped image's own layer deleted",
    )
    assert sorted(p.name for p in tag_dir.iterdir()) == ["keep", "odd"]
    for tag in ("keep", "odd"):
        assert tags[tag].all_digests <= mirror.stored_blobs()
    # The layer every small image shares stays: kept images hold it.
    shared = set(tags["keep"].blob_digests) & set(tags["drop"].blob_digests)
    assert shared and shared <= mirror.stored_blobs()
    assert "treating as 'retain' (fail-open)" in mirror.log()
    mirror.wait_for_log(f"{name}:drop (retention: no rule kept it)")  # the cycle's report
    metrics = mirror.get("/metrics").text
    deleted = metric_sample(metrics, "registry_lifecycle_deleted_bytes_total", reason="retention")
    assert deleted >= tags["drop"].largest_blob.size
    assert metric_sample(metrics, "registry_storage_bytes") > 0
    assert metric_sample(metrics, "registry_storage_objects", kind="tag") == 2
    assert metric_sample(metrics, "registry_lifecycle_last_run_timestamp_seconds", task="prune") > 0
    pull(mirror.url, tags["drop"])  # and it pulls again, from the upstream


# -- pull times -----------------------------------------------------------------------------


def test_pull_times_are_recorded_by_tag_and_by_digest_only_with_update_pull_time(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    recording = mirror_factory(
        repositories(upstream),
        global_={"update_pull_time": True},
        extra=lifecycle_config(),
        root=tmp_path / "recording",
    )
    silent = mirror_factory(repositories(upstream), extra=lifecycle_config(), root=tmp_path / "off")
    before = time.time()
    for mirror in (recording, silent):
        pull(mirror.url, small_image)
        pull(mirror.url, small_image, reference=small_image.digest)
        settle(mirror, small_image)
    pulls = recording.data_root / "repositories" / REPO / small_image.name / "_pulls"
    by_tag = pulls / "tags" / small_image.tag
    by_digest = pulls / "revisions" / "sha256" / small_image.digest.split(":", 1)[1]
    poll_until(lambda: by_tag.exists() and by_digest.exists(), 30, what="pull-time records")
    first = pull_time(recording, small_image)
    assert before <= first <= time.time()
    assert not list((silent.data_root / "repositories").rglob("_pulls"))
    time.sleep(1.1)  # the resolution: a pull within it is not worth a write
    pull(recording.url, small_image)
    poll_until(lambda: pull_time(recording, small_image) > first, 30, what="a newer pull time")


# -- prune and scrub beside live pulls ------------------------------------------------------


@pytest.mark.timeout(600)
def test_a_hundred_concurrent_pulls_while_prune_and_scrub_run_all_get_the_right_bytes(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
) -> None:
    index = pushed_images.get(upstream, "index", name="lc/multi", tag="1.0", salt="lc")
    pool = [*images(pushed_images, upstream, 4), index]
    # The budget holds about two of them: every prune evicts what the pulls bring back.
    mirror = mirror_factory(
        repositories(upstream),
        global_={"update_pull_time": True},
        # No grace: the bytes of what goes are deleted at once, under the pulls' feet.
        extra=lifecycle_config(max_size=f"{int(2.2 * MiB)}B"),
    )
    for image in pool:
        pull(mirror.url, image)
    stop = threading.Event()
    runs: list[subprocess.CompletedProcess[str]] = []

    def maintain() -> None:
        while not stop.is_set():
            runs.append(cli(mirror, "prune"))
            runs.append(cli(mirror, "scrub"))

    maintenance = threading.Thread(target=maintain)
    maintenance.start()
    failures: list[str] = []
    try:
        rounds = 0
        deadline = time.monotonic() + 120
        while rounds < 3 or (not deleted(runs) and time.monotonic() < deadline):
            with ThreadPoolExecutor(max_workers=100) as executor:
                futures = [
                    executor.submit(pull, mirror.url, random.Random(i + 100 * rounds).choice(pool))
                    for i in range(100)
                ]
                for future in futures:
                    try:
                        future.result()
                    except Exception as error:  # collect, then fail with all of them
                        failures.append(repr(error)[:300])
            rounds += 1
    finally:
        stop.set()
        maintenance.join(timeout=120)
    assert failures == []
    assert runs and all(run.returncode == 0 for run in runs), [r.stderr for r in runs][-2:]
    # Prune did evict, and delete bytes, while the pulls ran.
    assert any("(budget: least recently used)" in run.stdout for run in runs)
    assert deleted(runs)
    assert "Traceback" not in mirror.log()


def deleted(runs: list[subprocess.CompletedProcess[str]]) -> bool:
    return any("removed blob sha256:" in run.stdout for run in runs)


# -- scrub --verify ---------------------------------------------------------------------------


def test_scrub_verify_removes_a_blob_corrupted_on_disk_and_the_next_pull_fetches_it_again(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror = mirror_factory(repositories(upstream), extra=lifecycle_config())
    pull(mirror.url, small_image)
    settle(mirror, small_image)
    layer = small_image.largest_blob.digest
    hex_ = layer.split(":", 1)[1]
    path = mirror.data_root / "blobs" / "sha256" / hex_[:2] / hex_
    path.write_bytes(b"flipped bits" + path.read_bytes()[12:])

    dry = cli(mirror, "scrub", "--verify", "--dry-run")
    assert dry.returncode == 0 and f"blob {layer} does not match its digest" in dry.stdout
    assert path.exists()
    result = cli(mirror, "scrub", "--verify")
    assert result.returncode == 0, result.stderr
    assert f"blob {layer} does not match its digest (corrupt)" in result.stdout
    assert not path.exists()
    link = mirror.data_root / "repositories" / REPO / small_image.name / "_layers" / "sha256" / hex_
    assert not link.exists()
    assert small_image.all_digests - {layer} <= mirror.stored_blobs()

    mark = upstream.mark()
    pull(mirror.url, small_image)
    assert f"/v2/{small_image.name}/blobs/{layer}" in upstream_gets(upstream, mark)
    mirror.wait_for_blobs({layer})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hex_


# -- DELETE -----------------------------------------------------------------------------------


READS = (
    "request.action in ['get-api-version', 'get-manifest', 'get-blob', 'list-tags', 'readyz', "
    "'healthz']"
)


def test_a_delete_needs_a_policy_that_allows_it_and_the_next_pull_goes_upstream(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> None:
    image = pushed_images.get(upstream, "small", name="lc/deletable", tag="1.0", content=b"d")
    other = pushed_images.get(upstream, "small", name="lc/kept", tag="1.0", content=b"k")
    deletes = f"request.action == 'delete-manifest' && request.namespace == '{REPO}/lc/deletable'"
    policy = {"access_policy": {"default": "deny", "rules": [READS, deletes]}}
    mirror = mirror_factory(
        repositories(upstream), global_=policy, extra=lifecycle_config(), root=tmp_path / "rules"
    )
    legacy = mirror_factory(repositories(upstream), extra=lifecycle_config(), root=tmp_path / "old")
    for target in (mirror, legacy):
        for each in (image, other):
            pull(target.url, each)
            settle(target, each)

    # The older `default_allow = true` grants reads only.
    refused = requests.delete(f"{legacy.url}/v2/{REPO}/{image.name}/manifests/1.0", timeout=30)
    assert refused.status_code in (401, 403)
    assert refused.json()["errors"][0]["code"] in ("DENIED", "UNAUTHORIZED")
    assert (legacy.data_root / "repositories" / REPO / image.name / "_manifests/tags/1.0").exists()
    # A rule allows deletes of one name only.
    refused = requests.delete(f"{mirror.url}/v2/{REPO}/{other.name}/manifests/1.0", timeout=30)
    assert refused.status_code in (401, 403)
    missing = requests.delete(f"{mirror.url}/v2/{REPO}/{image.name}/manifests/nope", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"

    name_dir = mirror.data_root / "repositories" / REPO / image.name / "_manifests"
    deleted = requests.delete(f"{mirror.url}/v2/{REPO}/{image.name}/manifests/1.0", timeout=30)
    assert deleted.status_code == 202
    assert not (name_dir / "tags" / "1.0").exists()
    assert (name_dir / "revisions" / "sha256" / image.digest.split(":", 1)[1]).exists()
    mark = upstream.mark()
    pull(mirror.url, image)  # immutable and remembered before: the delete made it forget
    assert f"/v2/{image.name}/manifests/1.0" in upstream_gets(upstream, mark)

    by_digest = f"{mirror.url}/v2/{REPO}/{image.name}/manifests/{image.digest}"
    mirror.wait_for_tag(f"{REPO}/{image.name}", "1.0")
    assert requests.delete(by_digest, timeout=30).status_code == 202
    assert not (name_dir / "tags" / "1.0").exists()
    assert not (name_dir / "revisions" / "sha256" / image.digest.split(":", 1)[1]).exists()
    # The bytes go with GC (released now; grace 0 here).
    result = cli(mirror, "scrub")
    assert result.returncode == 0, result.stderr
    own = set(image.blob_digests) - set(other.blob_digests)
    assert not (own | {image.digest}) & mirror.stored_blobs()
    assert other.all_digests <= mirror.stored_blobs()


# -- split mode: two cachers, S3, Redis -----------------------------------------------------


class S3Consistency:
    """Polls the bucket while the test runs for what a client could see half-deleted: a
    record (tag or manifest) still there while a blob it names, stored before, is gone.
    (A manifest whose layers are not cached *yet* is normal: caching is asynchronous.)"""

    def __init__(self, s3: S3Server, bucket: str):
        self.client = s3.client()
        self.bucket = bucket
        self.problems: list[str] = []
        self.checks = 0
        self.seen: set[str] = set()  # every blob ever listed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> S3Consistency:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def _keys(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", ())}

    def _blobs(self) -> set[str]:
        return {"sha256:" + k.rsplit("/", 1)[1] for k in self._keys() if k.startswith("blobs/")}

    def check(self) -> None:
        before = self._blobs()
        self.seen |= before
        records = {k: self._get(k) for k in self._keys() if "/_manifests/" in k}
        blobs = self._blobs()  # listed after the records were read: a later state
        self.seen |= blobs
        for key, data in records.items():
            if data is None:
                continue
            digest = json.loads(data)["digest"]
            names = [digest]
            hex_ = digest.split(":", 1)[1]
            manifest = self._get(f"blobs/sha256/{hex_[:2]}/{hex_}")
            if manifest is not None:
                parsed = json.loads(manifest)
                names += [
                    e["digest"] for e in [parsed.get("config"), *parsed.get("layers", [])] if e
                ]
            gone = [name for name in names if name in before and name not in blobs]
            if gone and self._get(key) is not None:  # records go before blobs: still there?
                self.problems.append(f"{key} still names deleted {gone}")
        self.checks += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as error:  # a transient listing error is not a finding
                self.problems.append(f"checker: {error!r}")
            self._stop.wait(0.2)


@pytest.mark.timeout(600)
def test_split_mode_one_cacher_prunes_a_killed_ones_lock_expires_and_the_other_finishes(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    s3_server: S3Server,
    redis_server: RedisServer,
    request: pytest.FixtureRequest,
) -> None:
    keep = pushed_images.get(upstream, "small", name="lc/split", tag="keep", content=b"keep")
    drops = [
        pushed_images.get(upstream, "small", name="lc/split", tag=f"drop{i}", content=b"%d" % i)
        for i in range(2)
    ]
    bucket = s3_server.create_bucket(bucket_name(request.node.name))
    shared: dict[str, Any] = {
        "storage": s3_server.blob_store_table(bucket),
        "redis_url": redis_server.url,
        "global_": {"retention_policy": {"rules": ['image.tag == "keep"']}},
        "extra": lifecycle_config(interval_secs=2),
    }
    frontends = [
        mirror_factory(repositories(upstream), command="frontend", **shared) for _ in range(2)
    ]
    cachers = [mirror_factory(repositories(upstream), command="cacher", **shared) for _ in range(2)]
    lock_key = "simple-registry:lock:lifecycle"
    client = s3_server.client()
    redis_client = redis_py.Redis.from_url(redis_server.url)

    def invalidation_written() -> float:
        try:
            data = client.get_object(Bucket=bucket, Key="_lifecycle/invalidation")["Body"].read()
        except client.exceptions.NoSuchKey:
            return 0.0
        return float(json.loads(data)["written_at"])

    with S3Consistency(s3_server, bucket) as checker:
        for frontend in frontends:  # both frontends remember every image
            for image in (keep, *drops):
                pull(frontend.url, image)
        # A cacher starts pruning the drops: it holds the lock and told frontends to forget;
        # kill it there, before it deletes anything.
        poll_until(lambda: invalidation_written() > 0, 60, what="a prune to begin deleting")
        lock_value = redis_client.get(lock_key) or b""
        assert isinstance(lock_value, bytes)  # decode_responses is off
        holder = lock_value.decode()
        pid = int(holder.split(":")[1])
        victim = next(c for c in cachers if c.process is not None and c.process.pid == pid)
        survivor = next(c for c in cachers if c is not victim)
        victim.expect_failure("killed with SIGKILL while pruning")
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        assert redis_client.get(lock_key) is not None  # the dead cacher's lock lives on
        tags = f"repositories/{REPO}/lc/split/_manifests/tags/"

        def tags_left() -> set[str]:
            listed = client.list_objects_v2(Bucket=bucket, Prefix=tags).get("Contents", ())
            return {item["Key"][len(tags) :] for item in listed}

        poll_until(lambda: tags_left() == {"keep"}, 90, what="the survivor to finish the prune")
        took_over_after = time.monotonic() - killed_at
        assert f"holder={survivor_holder(survivor)}" in survivor.log()
        checker.check()
    assert checker.problems == [] and checker.checks > 5
    # It waited for the dead cacher's lock to expire (refreshed at most 5 s before the kill).
    assert took_over_after >= 9.0

    def stored() -> set[str]:
        return {
            "sha256:" + k.rsplit("/", 1)[1]
            for k in s3_server.object_names(bucket)
            if k.startswith("blobs/")
        }

    # Tags go first, their manifests' bytes after them (records before bytes): wait for
    # the last step of the survivor's prune, not only the first.
    poll_until(
        lambda: not {image.digest for image in drops} & stored(),
        60,
        what="the survivor to delete the dropped manifests' bytes",
    )
    assert keep.all_digests <= stored()
    # Every frontend forgot, and an evicted image pulls again correctly through each.
    for frontend in frontends:
        assert "content is being deleted: memory forgotten and held off" in frontend.log()
    mark = upstream.mark()
    for frontend, image in zip(frontends, drops, strict=True):
        pull(frontend.url, image)
    fetched = upstream_gets(upstream, mark)
    for image in drops:
        assert f"/v2/lc/split/manifests/{image.tag}" in fetched


def survivor_holder(cacher: Mirror) -> str:
    """The lock owner a cacher logs (host:pid:token): its pid is enough to match."""
    assert cacher.process is not None
    return f"{socket.gethostname()}:{cacher.process.pid}:"
