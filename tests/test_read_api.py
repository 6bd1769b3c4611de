"""The OCI read API on cached content: headers, Range, conditional requests, tag and
catalog listing with pagination."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache, pusher_for
from tests.fixtures.skopeo import skopeo_copy

REPO = "docker-io"


@pytest.fixture
def warm(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> Mirror:
    """A mirror that has pulled and stored the small image."""
    mirror = mirror_factory(
        {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}
    )
    skopeo_copy(f"{mirror.host_port}/{REPO}/{small_image.name}:{small_image.tag}", tmp_path / "o")
    mirror.wait_for_blobs({small_image.digest, *small_image.blob_digests})
    mirror.wait_for_tag(f"{REPO}/{small_image.name}", small_image.tag)
    return mirror


def biggest_blob(image: PushedImage) -> tuple[str, bytes]:
    blob = image.largest_blob
    return blob.digest, blob.read()


def test_a_cached_blob_answers_get_and_head_with_digest_length_and_type(
    warm: Mirror, small_image: PushedImage
) -> None:
    digest, data = biggest_blob(small_image)
    path = f"/v2/{REPO}/{small_image.name}/blobs/{digest}"
    response = warm.get(path)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["ETag"] == f'"{digest}"'
    head = warm.head(path)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize(
    ("range_header", "start", "stop"),
    [("bytes=0-9", 0, 10), ("bytes=5-", 5, None), ("bytes=-7", -7, None), ("bytes=3-3", 3, 4)],
)
def test_a_single_byte_range_of_a_cached_blob_is_a_206_with_content_range(
    warm: Mirror, small_image: PushedImage, range_header: str, start: int, stop: int | None
) -> None:
    _, data = biggest_blob(small_image)
    response = ranged_get(warm, small_image, range_header)
    assert response.status_code == 206
    expected = data[start:stop]
    assert response.content == expected
    first = start if start >= 0 else len(data) + start
    assert (
        response.headers["Content-Range"]
        == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    )


def ranged_get(mirror: Mirror, image: PushedImage, range_header: str) -> requests.Response:
    digest, _ = biggest_blob(image)
    return mirror.get(f"/v2/{REPO}/{image.name}/blobs/{digest}", headers={"Range": range_header})


@pytest.mark.parametrize("range_header", ["bytes=999999-", "bytes=-0"])
def test_a_range_nothing_can_satisfy_is_a_416_oci_error(
    warm: Mirror, small_image: PushedImage, range_header: str
) -> None:
    response = ranged_get(warm, small_image, range_header)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{small_image.largest_blob.size}"
    assert response.json()["errors"][0]["code"] == "RANGE_INVALID"


@pytest.mark.parametrize("range_header", ["bytes=0-1,4-5", "items=0-1", "bytes=9-3"])
def test_several_ranges_another_unit_or_an_invalid_range_get_the_whole_blob(
    warm: Mirror, small_image: PushedImage, range_header: str
) -> None:
    response = ranged_get(warm, small_image, range_header)
    assert (response.status_code, response.content) == (200, biggest_blob(small_image)[1])
    assert "Content-Range" not in response.headers


def test_if_none_match_with_the_digest_is_a_304_for_blobs_and_manifests(
    warm: Mirror, small_image: PushedImage
) -> None:
    digest, _ = biggest_blob(small_image)
    blob = warm.get(
        f"/v2/{REPO}/{small_image.name}/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'}
    )
    manifest = warm.get(
        f"/v2/{REPO}/{small_image.name}/manifests/{small_image.tag}",
        headers={"If-None-Match": f'"{small_image.digest}"'},
    )
    for answer, expected in ((blob, digest), (manifest, small_image.digest)):
        assert answer.status_code == 304
        assert answer.content == b""
        assert answer.headers["ETag"] == f'"{expected}"'
        assert answer.headers["Docker-Content-Digest"] == expected
    # Another digest is no match: the full answer.
    other = warm.get(
        f"/v2/{REPO}/{small_image.name}/blobs/{digest}", headers={"If-None-Match": '"sha256:0"'}
    )
    assert other.status_code == 200


def test_a_cached_manifest_answers_head_and_get_by_tag_and_digest_with_exact_bytes(
    warm: Mirror, small_image: PushedImage, upstream: Distribution
) -> None:
    mark = upstream.mark()
    for reference in (small_image.tag, small_image.digest):
        path = f"/v2/{REPO}/{small_image.name}/manifests/{reference}"
        response = warm.get(path)
        assert response.content == small_image.manifest_bytes
        assert response.headers["Content-Type"] == small_image.media_type
        assert response.headers["Docker-Content-Digest"] == small_image.digest
        head = warm.head(path)
        assert head.headers["Content-Length"] == str(len(small_image.manifest_bytes))
        assert head.content == b""
    assert upstream.settled_requests_since(mark) == []


def test_a_tag_list_pages_with_n_and_last_and_a_link_header(
    mirror_factory: MirrorFactory, upstream: Distribution, unique_repo: str, tmp_path: Path
) -> None:
    pusher = pusher_for(upstream)
    pusher.small_image(unique_repo, "a")
    for tag in ("b", "c"):
        pusher.retag(unique_repo, "a", tag)
    mirror = mirror_factory(
        {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}
    )
    for tag in ("c", "a", "b"):
        skopeo_copy(f"{mirror.host_port}/{REPO}/{unique_repo}:{tag}", tmp_path / tag)
        mirror.wait_for_tag(f"{REPO}/{unique_repo}", tag)
    name = f"{REPO}/{unique_repo}"
    everything = mirror.get(f"/v2/{name}/tags/list").json()
    assert everything == {"name": name, "tags": ["a", "b", "c"]}
    first = mirror.get(f"/v2/{name}/tags/list?n=2")
    assert first.json()["tags"] == ["a", "b"]
    assert first.headers["Link"] == f'</v2/{name}/tags/list?n=2&last=b>; rel="next"'
    second = mirror.get(f"/v2/{name}/tags/list?n=2&last=b")
    assert second.json()["tags"] == ["c"]
    assert "Link" not in second.headers


def test_the_catalog_lists_cached_repositories_with_pagination(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    unique_repo: str,
) -> None:
    images = [pushed_images.get(upstream, "small", name=f"{unique_repo}/{n}") for n in "cab"]
    mirror = mirror_factory(
        {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}
    )
    for image in images:
        assert mirror.get(f"/v2/{REPO}/{image.name}/manifests/{image.tag}").status_code == 200
        mirror.wait_for_tag(f"{REPO}/{image.name}", image.tag)
    names = sorted(f"{REPO}/{image.name}" for image in images)
    assert mirror.get("/v2/_catalog").json() == {"repositories": names}
    first = mirror.get("/v2/_catalog?n=2")
    assert first.json() == {"repositories": names[:2]}
    link = re.fullmatch(r'<(/v2/_catalog\?[^>]+)>; rel="next"', first.headers["Link"])
    assert link is not None, first.headers["Link"]
    second = mirror.get(link[1])
    assert second.json() == {"repositories": names[2:]}
    assert "Link" not in second.headers
    assert mirror.get(f"/v2/_catalog?n=5&last={names[0]}").json() == {"repositories": names[1:]}
    assert mirror.get("/v2/_catalog?n=0").json() == {"repositories": []}
