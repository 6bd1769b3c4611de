"""Pull-through with skopeo against a real upstream (CNCF Distribution), all in one process."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache, pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.skopeo import dir_blob, dir_manifest, skopeo_copy

REPO = "docker-io"


def hub(
    mirror_factory: MirrorFactory, upstream: Distribution, *, immutable: bool = True, **repo: Any
) -> Mirror:
    return mirror_factory(
        {
            REPO: {
                "immutable_tags": immutable,
                "immutable_tags_exclusions": ["^latest$"],
                "upstream": [upstream_entry(upstream)],
                **repo,
            }
        }
    )


def through(mirror: Mirror, image: PushedImage, tag: str | None = None) -> str:
    return f"{mirror.host_port}/{REPO}/{image.name}:{tag or image.tag}"


def settle(mirror: Mirror, image: PushedImage, tag: str | None = None) -> None:
    mirror.wait_for_blobs(image.all_digests)
    mirror.wait_for_tag(f"{REPO}/{image.name}", tag or image.tag)
    mirror.wait_for_links(f"{REPO}/{image.name}", set(image.blob_digests))


def warm_pull_requests(
    mirror: Mirror,
    upstream: Distribution,
    image: PushedImage,
    tmp_path: Path,
    timeout_s: float = 120,
) -> list[Any]:
    """Pull cold, let the cacher settle, pull again: what the upstream saw the second time."""
    skopeo_copy(through(mirror, image), tmp_path / "cold", timeout_s=timeout_s)
    settle(mirror, image)
    mark = upstream.mark()
    skopeo_copy(through(mirror, image), tmp_path / "warm", timeout_s=timeout_s)
    return upstream.settled_requests_since(mark)


def test_skopeo_pulls_a_small_image_with_the_upstreams_digests_and_storage_holds_exactly_it(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    mirror = hub(mirror_factory, upstream)
    skopeo_copy(through(mirror, small_image), tmp_path / "out")
    assert dir_manifest(tmp_path / "out") == small_image.manifest_bytes
    for blob in small_image.blobs:
        assert (
            hashlib.sha256(dir_blob(tmp_path / "out", blob.digest)).hexdigest() == blob.digest[7:]
        )
    settle(mirror, small_image)
    assert mirror.stored_blobs() == small_image.all_digests
    assert mirror.temp_files() == []


@pytest.mark.parametrize(
    ("tag", "asked"),
    [("1.0", []), ("latest", ["HEAD /manifests/latest"])],
    ids=["immutable-tag-costs-nothing", "mutable-tag-costs-one-head"],
)
def test_a_second_pull_costs_the_upstream_nothing_for_an_immutable_tag_and_a_head_otherwise(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
    tag: str,
    asked: list[str],
) -> None:
    image = pushed_images.get(upstream, "small", tag=tag)
    mirror = hub(mirror_factory, upstream)
    requests = warm_pull_requests(mirror, upstream, image, tmp_path)
    prefix = f"/v2/{image.name}"
    assert [f"{r.method} {r.path.removeprefix(prefix)}" for r in requests] == asked
    assert dir_manifest(tmp_path / "warm") == image.manifest_bytes


def test_retagging_upstream_makes_the_next_pull_return_the_new_digest(
    mirror_factory: MirrorFactory, upstream: Distribution, unique_repo: str, tmp_path: Path
) -> None:
    pusher = pusher_for(upstream)
    first = pusher.small_image(unique_repo, "latest")
    mirror = hub(mirror_factory, upstream)
    skopeo_copy(through(mirror, first), tmp_path / "one")
    settle(mirror, first)
    second = pusher.replace_tag(unique_repo, "latest", generation=2)
    assert second.digest != first.digest
    skopeo_copy(through(mirror, second), tmp_path / "two")
    assert dir_manifest(tmp_path / "two") == second.manifest_bytes
    mirror.wait_for_blobs(second.all_digests)
    tag_file = mirror.data_root / "repositories" / REPO / unique_repo / "_manifests/tags/latest"
    poll_until(
        lambda: second.digest in tag_file.read_text(), 30, what="the tag to point at the new digest"
    )


def test_an_arm64_pull_of_a_multi_platform_index_gets_the_arm64_manifest(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    multi_platform_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = hub(mirror_factory, upstream)
    skopeo_copy(through(mirror, multi_platform_image), tmp_path / "arm", override_arch="arm64")
    arm = multi_platform_image.image.for_platform("arm64")  # type: ignore[union-attr]
    assert dir_manifest(tmp_path / "arm") == arm.raw


@pytest.mark.parametrize("kind", ["multi_platform_image", "docker_list_image"])
def test_an_all_platforms_pull_of_an_oci_index_or_a_docker_manifest_list_is_byte_identical(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
) -> None:
    image: PushedImage = request.getfixturevalue(kind)
    mirror = hub(mirror_factory, upstream)
    skopeo_copy(through(mirror, image), tmp_path / "all", all_images=True)
    assert dir_manifest(tmp_path / "all") == image.manifest_bytes
    for manifest in image.manifests:
        assert dir_manifest(tmp_path / "all", manifest.digest) == manifest.raw
    settle(mirror, image)
    assert mirror.stored_blobs() == image.all_digests
    response = mirror.get(
        f"/v2/{REPO}/{image.name}/manifests/{image.tag}", headers={"Accept": image.media_type}
    )
    assert response.headers["Content-Type"] == image.media_type
    assert response.headers["Docker-Content-Digest"] == image.digest


@pytest.mark.timeout(600)
def test_a_large_image_pulls_cold_and_warm_with_the_right_digest(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> None:
    image = pushed_images.get(upstream, "large", tag="1.0", size_mib=100)
    layer = image.largest_blob
    assert layer.size >= 100 * 1024 * 1024
    mirror = hub(mirror_factory, upstream)
    assert warm_pull_requests(mirror, upstream, image, tmp_path, timeout_s=300) == []
    digest = hashlib.sha256((tmp_path / "warm" / layer.digest[7:]).read_bytes()).hexdigest()
    assert f"sha256:{digest}" == layer.digest
    assert mirror.temp_files() == []


def test_an_upstream_with_basic_auth_is_pulled_through_with_the_configured_credentials(
    mirror_factory: MirrorFactory,
    upstream_basic: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> None:
    image = pushed_images.get(upstream_basic, "small")
    mirror = hub(mirror_factory, upstream_basic)
    skopeo_copy(through(mirror, image), tmp_path / "out")
    assert dir_manifest(tmp_path / "out") == image.manifest_bytes
    assert upstream_basic.password is not None
    assert upstream_basic.password not in mirror.log()


def test_an_upstream_with_token_auth_is_pulled_through_and_its_token_is_reused(
    mirror_factory: MirrorFactory,
    upstream_token: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> None:
    image = pushed_images.get(upstream_token, "small", tag="latest")
    mirror = hub(mirror_factory, upstream_token)
    token_server = upstream_token.token_server
    assert token_server is not None
    mark = token_server.mark()
    skopeo_copy(through(mirror, image), tmp_path / "one")
    assert dir_manifest(tmp_path / "one") == image.manifest_bytes
    first = token_server.requests_since(mark)
    # The frontend and the cacher share one token cache: one token request for the pull.
    assert [r.status for r in first] == [200], first
    settle(mirror, image)
    mark = token_server.mark()
    skopeo_copy(through(mirror, image), tmp_path / "two")  # mutable tag: one HEAD upstream
    assert token_server.requests_since(mark) == []
    assert upstream_token.password is not None
    assert upstream_token.password not in mirror.log()


@pytest.mark.timeout(600)
def test_a_cold_pull_fetches_each_blob_from_upstream_once_the_cacher_commits_the_spooled_bytes(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> None:
    image = pushed_images.get(upstream, "large", tag="1.0", size_mib=100)
    mirror = hub(mirror_factory, upstream)
    mark = upstream.mark()
    skopeo_copy(through(mirror, image), tmp_path / "cold", timeout_s=300)
    settle(mirror, image)
    blob_gets = [
        r.path
        for r in upstream.settled_requests_since(mark)
        if r.method == "GET" and "/blobs/" in r.path
    ]
    assert sorted(blob_gets) == sorted(f"/v2/{image.name}/blobs/{d}" for d in image.blob_digests)
    assert "committed staged blob" in mirror.log()
    assert list((mirror.data_root / "_staging").glob(f"*{image.largest_blob.digest[7:]}*")) == []


def test_a_client_that_does_not_accept_the_cached_type_gets_what_the_upstream_negotiates(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    docker_list_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = hub(mirror_factory, upstream)
    skopeo_copy(through(mirror, docker_list_image), tmp_path / "all", all_images=True)
    settle(mirror, docker_list_image)
    path = f"/v2/{REPO}/{docker_list_image.name}/manifests/{docker_list_image.tag}"
    old_client = mirror.get(
        path, headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    )
    assert old_client.status_code == 200
    assert (
        old_client.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    )
    amd64 = docker_list_image.image.for_platform("amd64")  # type: ignore[union-attr]
    assert old_client.headers["Docker-Content-Digest"] == amd64.digest
    # The tag still names the list for every client that accepts it.
    again = mirror.get(path, headers={"Accept": docker_list_image.media_type})
    assert again.headers["Docker-Content-Digest"] == docker_list_image.digest
