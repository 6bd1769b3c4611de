"""`simple-registry warm NAME:TAG`: an image fetched into the configured storage off-peak,
so that the first pull through a registry on that storage costs the upstream nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import tomli_w

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import (
    PROJECT_ROOT,
    REGISTRY_COMMAND,
    MirrorFactory,
    mirror_config,
    upstream_entry,
)
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import free_port
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.skopeo import dir_manifest, skopeo_copy

REPO = "hub"


def repositories(upstream: Distribution) -> dict[str, dict[str, Any]]:
    return {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}


def run_warm(
    tmp_path: Path, config: dict[str, Any], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "warm.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [*REGISTRY_COMMAND, "-c", str(path), "warm", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=tmp_path,
    )


def stored(root: Path, name: str) -> dict[str, set[str]]:
    """What the layout holds of `name`: tags, revisions (digests) and layer links."""
    base = root / "repositories" / name

    def digests(folder: Path) -> set[str]:
        return (
            {f"{p.parent.name}:{p.name}" for p in folder.glob("*/*")} if folder.exists() else set()
        )

    tags = base / "_manifests" / "tags"
    return {
        "tags": {p.name for p in tags.iterdir()} if tags.exists() else set(),
        "revisions": digests(base / "_manifests" / "revisions"),
        "layers": digests(base / "_layers"),
    }


def blobs(root: Path) -> set[str]:
    return {f"{p.parent.parent.name}:{p.name}" for p in (root / "blobs").glob("*/*/*")}


def test_warm_stores_every_platform_and_the_first_pull_then_makes_no_upstream_request(
    tmp_path: Path,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    mirror_factory: MirrorFactory,
) -> None:
    image = pushed_images.get(upstream, "index", name="ui/warm-cli", tag="1.0")
    config = mirror_config(tmp_path, repositories(upstream), port=free_port())
    result = run_warm(tmp_path, config, f"{REPO}/{image.name}:{image.tag}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"warmed {REPO}/{image.name}:{image.tag} {image.digest}" in result.stdout
    assert "linux/amd64" in result.stdout and "linux/arm64" in result.stdout
    root = tmp_path / "data"
    name = f"{REPO}/{image.name}"
    children = {m.digest for m in image.manifests}
    assert stored(root, name) == {
        "tags": {image.tag},
        "revisions": {image.digest, *children},
        "layers": set(image.blob_digests),
    }
    assert blobs(root) == {image.digest, *children, *image.blob_digests}

    mirror = mirror_factory(repositories(upstream), root=tmp_path)
    mark = upstream.mark()
    skopeo_copy(f"{mirror.host_port}/{name}:{image.tag}", tmp_path / "pulled", all_images=True)
    assert dir_manifest(tmp_path / "pulled") == image.manifest_bytes
    assert upstream.settled_requests_since(mark) == []


def test_warm_with_a_platform_fetches_only_that_platform_of_an_index(
    tmp_path: Path, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream, "index", name="ui/warm-platform", tag="1.0", salt="p")
    arm = image.image.for_platform("arm64")  # type: ignore[union-attr]
    amd = image.image.for_platform("amd64")  # type: ignore[union-attr]
    config = mirror_config(tmp_path, repositories(upstream), port=free_port())
    result = run_warm(
        tmp_path, config, f"{REPO}/{image.name}:{image.tag}", "--platform", "linux/arm64"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped linux/amd64" in result.stdout
    held = stored(tmp_path / "data", f"{REPO}/{image.name}")
    assert held["revisions"] == {image.digest, arm.digest}
    assert held["layers"] == {blob.digest for blob in arm.blobs}
    only_amd = {blob.digest for blob in amd.blobs} - {blob.digest for blob in arm.blobs}
    assert only_amd and not only_amd & blobs(tmp_path / "data")


def test_warm_of_a_tag_the_upstream_does_not_have_fails_and_stores_nothing(
    tmp_path: Path, upstream: Distribution
) -> None:
    config = mirror_config(tmp_path, repositories(upstream), port=free_port())
    result = run_warm(tmp_path, config, f"{REPO}/ui/never-pushed:1.0")
    assert result.returncode == 1
    assert f"{REPO}/ui/never-pushed:1.0" in result.stdout
    assert blobs(tmp_path / "data") == set()


def test_warm_names_a_bad_image_reference_and_exits_2(
    tmp_path: Path, upstream: Distribution
) -> None:
    config = mirror_config(tmp_path, repositories(upstream), port=free_port())
    for reference in ("hub/no-tag", "Hub/Upper:1", "hub/x:1", "hub/x:-bad"):
        args = (reference, "--platform", "linux") if reference == "hub/x:1" else (reference,)
        result = run_warm(tmp_path, config, *args)
        assert result.returncode == 2, (reference, result.stdout, result.stderr)


def test_warm_with_redis_hands_the_jobs_to_the_running_cacher_and_waits_for_it(
    tmp_path: Path,
    upstream: Distribution,
    small_image: PushedImage,
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
) -> None:
    cacher = mirror_factory(repositories(upstream), command="cacher", redis_url=redis_server.url)
    config = dict(cacher.config)
    result = run_warm(tmp_path, config, f"{REPO}/{small_image.name}:{small_image.tag}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert blobs(tmp_path / "data") >= {small_image.digest, *small_image.blob_digests}
    assert "job done" in cacher.log()  # the running cacher stored it, not the command
