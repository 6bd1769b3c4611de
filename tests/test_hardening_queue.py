"""A poisoned Redis (issue 12, item 2): whoever can write to the queue but does not hold
the job signing key cannot make a cacher store anything, and a signed job is still held to
what a pull could have produced. A real redis-server, a real Distribution, the standalone
cacher as a process."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

import redis as redis_py
from simple_registry.common.queue.jobs import CacheJob, JobKind, JobSigner
from simple_registry.common.queue.redis import DEAD, JOBS, queue_key

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.test_config import run_cli

PREFIX = "simple-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EVIL = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "poisoned": True}).encode()
EVIL_DIGEST = "sha256:" + hashlib.sha256(EVIL).hexdigest()
YEAR_2100 = 4102444800.0


def poisoned(image: PushedImage, tag: str, enqueued_at: float = 0.0) -> CacheJob:
    """A manifest job that would make `tag` of `image` name the poisoned manifest."""
    job = CacheJob(JobKind.MANIFEST, "hub", image.name, EVIL_DIGEST, len(EVIL), tag=tag)
    job = replace(job, media_type=OCI_MANIFEST, data=EVIL)
    return replace(job, enqueued_at=enqueued_at) if enqueued_at else job


def dead_letters(server: RedisServer) -> list[dict[bytes, bytes]]:
    client = redis_py.Redis.from_url(server.url)
    try:
        # bytes (decode_responses is off) and never None from XRANGE, which the stub allows
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], client.xrange(queue_key(PREFIX, DEAD))
        )
        return [fields for _id, fields in entries]
    finally:
        client.close()


def wait_for_dead_letters(server: RedisServer, cacher: Mirror, count: int) -> list[str]:
    poll_until(
        lambda: len(dead_letters(server)) >= count,
        60,
        what=f"{count} dead letters",
        log_path=cacher.log_path,
    )
    return [fields[b"reason"].decode() for fields in dead_letters(server)]


def stored(cacher: Mirror, relative: str) -> bool:
    return (cacher.data_root / relative).exists()


def blob_path(digest: str) -> str:
    hex_ = digest.split(":", 1)[1]
    return f"blobs/sha256/{hex_[:2]}/{hex_}"


def start_cacher(
    mirror_factory: MirrorFactory, redis_server: RedisServer, upstream: Distribution
) -> Mirror:
    return mirror_factory(
        {"hub": {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}},
        command="cacher",
        redis_url=redis_server.url,
    )


def test_a_job_not_signed_with_the_key_is_dead_lettered_and_nothing_is_stored(
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
    upstream: Distribution,
    small_image: PushedImage,
) -> None:
    cacher = start_cacher(mirror_factory, redis_server, upstream)
    job = poisoned(small_image, small_image.tag, enqueued_at=YEAR_2100)
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        jobs = queue_key(PREFIX, JOBS)
        client.xadd(jobs, {"job": job.pack()})  # the old, unsigned format
        client.xadd(jobs, {"job": JobSigner(b"a guessed key, not the one").seal(job.pack())})
    finally:
        client.close()

    reasons = wait_for_dead_letters(redis_server, cacher, 2)
    assert all("signature does not verify" in reason for reason in reasons)
    assert not stored(cacher, blob_path(EVIL_DIGEST))
    assert not stored(cacher, f"repositories/hub/{small_image.name}/_manifests/tags/latest")
    assert "rejected job" in cacher.log()


def test_a_signed_job_asking_for_what_no_pull_could_is_dead_lettered(
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
    upstream: Distribution,
    small_image: PushedImage,
) -> None:
    cacher = start_cacher(mirror_factory, redis_server, upstream)
    manifest = poisoned(small_image, "latest")
    big = b"\x00" * (5 * 1024 * 1024)  # over max_manifest_size (4 MiB)
    inline = b"\x01" * (300 * 1024)  # over the inline limit of a blob job (256 KiB)
    target = blob_path(small_image.blob_digests[0])
    bad = [
        replace(manifest, tag=f"../../../../../{target}"),
        replace(manifest, remote_name="../../../blobs/sha256"),
        replace(manifest, remote_name="fixtures/../../x"),
        replace(manifest, repository="not-configured"),
        replace(manifest, media_type="text/html\r\nX-Injected: yes"),
        replace(
            manifest,
            digest="sha256:" + hashlib.sha256(big).hexdigest(),
            size=len(big),
            data=big,
        ),
        CacheJob(
            JobKind.BLOB,
            "hub",
            small_image.name,
            "sha256:" + hashlib.sha256(inline).hexdigest(),
            data=inline,
        ),
        CacheJob(
            JobKind.BLOB,
            "hub",
            small_image.name,
            small_image.blob_digests[0],
            staged=f"_staging/../{target}",
        ),
        replace(manifest, size=len(EVIL) + 1),
    ]
    enqueue_jobs(redis_server.url, bad)

    reasons = wait_for_dead_letters(redis_server, cacher, len(bad))
    assert len(reasons) == len(bad)
    assert all(reason.startswith("invalid job") for reason in reasons), reasons
    assert not stored(cacher, blob_path(EVIL_DIGEST))
    assert not stored(cacher, target)
    written = [p for p in cacher.data_root.rglob("*") if p.is_file() and "_manifests" in p.parts]
    assert written == []


def test_a_job_from_the_year_2100_cannot_pin_a_tag(
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
    upstream: Distribution,
    small_image: PushedImage,
) -> None:
    cacher = start_cacher(mirror_factory, redis_server, upstream)
    tag_file = (
        cacher.data_root / "repositories" / "hub" / small_image.name / "_manifests/tags/pinned"
    )
    future = poisoned(small_image, "pinned", enqueued_at=YEAR_2100)
    enqueue_jobs(redis_server.url, [future])
    poll_until(tag_file.exists, 30, what="the tag written", log_path=cacher.log_path)
    assert json.loads(tag_file.read_bytes())["updated_at"] <= time.time()

    # A later observation replaces it (a year-2100 time would have refused it forever).
    real = replace(
        poisoned(small_image, "pinned"),
        digest=small_image.digest,
        size=len(small_image.manifest_bytes),
        media_type=small_image.media_type,
        data=small_image.manifest_bytes,
    )
    enqueue_jobs(redis_server.url, [real])
    poll_until(
        lambda: json.loads(tag_file.read_bytes())["digest"] == small_image.digest,
        30,
        what="the tag replaced",
        log_path=cacher.log_path,
    )


def test_a_frontend_or_cacher_without_a_job_signing_key_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    base = (
        f'[blob_store.fs]\nroot_dir = "{tmp_path / "data"}"\n'
        '[[repository."hub".upstream]]\nurl = "https://registry.example"\n'
        '[queue.redis]\nurl = "redis://:redis-password@127.0.0.1:1/0"\n'
    )
    config.write_text(base)
    for command in ("frontend", "cacher"):
        result = run_cli("-c", str(config), command)
        assert result.returncode == 2, result.stderr
        assert "queue.redis.job_signing_key" in result.stderr
        assert "redis-password" not in result.stderr
    short = tmp_path / "short.key"
    short.write_text("tiny\n")
    config.write_text(base + f'job_signing_key_file = "{short}"\n')
    result = run_cli("-c", str(config), "cacher")
    assert result.returncode == 2
    assert "queue.redis.job_signing_key_file" in result.stderr and "tiny" not in result.stderr
    config.write_text(base + f'job_signing_key_file = "{tmp_path / "missing.key"}"\n')
    assert run_cli("-c", str(config), "check-config").returncode == 2
    good = tmp_path / "job.key"
    good.write_text("0123456789abcdef0123456789abcdef\n")
    config.write_text(base + f'job_signing_key_file = "{good}"\n')
    assert run_cli("-c", str(config), "check-config").returncode == 0
