"""Upstream behaviour: failover in configured order, redirects, sharing stored content
between repositories without leaking it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

from tests.fixtures.distribution import Distribution
from tests.fixtures.idle import wait_until_idle
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import MirrorFactory, upstream_entry
from tests.fixtures.plugin import pusher_for
from tests.fixtures.skopeo import dir_manifest, skopeo_copy
from tests.fixtures.threaded_server import StandIn


def test_a_refused_first_upstream_falls_over_to_the_next_in_order(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    tmp_path: Path,
    refused_url: str,
) -> None:
    dead = {"url": refused_url, "connect_timeout_secs": 2}
    mirror = mirror_factory({"hub": {"upstream": [dead, upstream_entry(upstream)]}})
    skopeo_copy(f"{mirror.host_port}/hub/{small_image.name}:{small_image.tag}", tmp_path / "o")
    assert dir_manifest(tmp_path / "o") == small_image.manifest_bytes
    assert f"upstream={refused_url.removeprefix('http://')}" in mirror.log()  # it was tried


def test_an_upstream_url_path_is_a_namespace_prefix_at_the_upstream(
    mirror_factory: MirrorFactory, upstream: Distribution, unique_repo: str, tmp_path: Path
) -> None:
    image = pusher_for(upstream).small_image(f"{unique_repo}/app", "1.0")
    mirror = mirror_factory({"team": {"upstream": [{"url": f"{upstream.url}/{unique_repo}"}]}})
    skopeo_copy(f"{mirror.host_port}/team/app:1.0", tmp_path / "o")
    assert dir_manifest(tmp_path / "o") == image.manifest_bytes


def test_a_blob_stored_through_one_repository_is_linked_not_fetched_again_for_another(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    mirror = mirror_factory(
        {
            "one": {"upstream": [upstream_entry(upstream)]},
            "two": {"upstream": [upstream_entry(upstream)]},
        }
    )
    skopeo_copy(f"{mirror.host_port}/one/{small_image.name}:{small_image.tag}", tmp_path / "a")
    mirror.wait_for_blobs({small_image.digest, *small_image.blob_digests})
    mark = upstream.mark()
    skopeo_copy(f"{mirror.host_port}/two/{small_image.name}:{small_image.tag}", tmp_path / "b")
    blob_gets = [
        r
        for r in upstream.settled_requests_since(mark)
        if r.method == "GET" and "/blobs/" in r.path
    ]
    assert blob_gets == []  # each blob: one HEAD to check that "two" may see it, no GET


def test_a_blob_stored_through_one_repository_is_not_served_for_a_name_the_upstream_lacks(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    mirror = mirror_factory({"one": {"upstream": [upstream_entry(upstream)]}})
    skopeo_copy(f"{mirror.host_port}/one/{small_image.name}:{small_image.tag}", tmp_path / "a")
    mirror.wait_for_blobs({small_image.digest, *small_image.blob_digests})
    digest = small_image.blob_digests[0]
    response = mirror.get(f"/v2/one/no/such/image/blobs/{digest}")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


class Cdn(StandIn):
    """A stand-in for Docker Hub's blob CDN (no real part redirects blobs to another host):
    it answers `/v2/.../blobs/...` with a 307 to itself under another host name (through
    `hops` redirects in all), serves the bytes from the real upstream there, and records
    the headers it was sent."""

    def __init__(self, upstream: Distribution, hops: int = 1):
        self.upstream = upstream
        self.hops = hops
        self.hops_seen: list[int] = []  # the redirect hops requested, in order
        self.cdn_requests: list[dict[str, str]] = []
        self.authorized_requests = 0
        self.expected_auth = "Basic " + base64.b64encode(b"someone:s3cret-password").decode()
        super().__init__("cdn")

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/v2/" and request.headers.get("Authorization") != self.expected_auth:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="cdn-test"'})
        if request.path != "/v2/":
            self.authorized_requests += 1
        if "/blobs/" in request.path:
            digest = request.path.rsplit("/", 1)[1]
            name = request.path[len("/v2/") : request.path.index("/blobs/")]
            raise web.HTTPTemporaryRedirect(self._hop(1, name, digest))
        upstream = requests.request(
            request.method,
            f"{self.upstream.url}{request.path_qs}",
            headers=dict(request.headers),
            timeout=30,
        )
        headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower()
            not in ("content-length", "transfer-encoding", "content-encoding", "connection")
        }
        return web.Response(
            status=upstream.status_code,
            body=upstream.content if request.method != "HEAD" else None,
            headers=headers,
        )

    def _hop(self, hop: int, name: str, digest: str) -> str:
        """Where redirect number `hop` points: another hop, or the bytes after the last."""
        if hop < self.hops:
            return f"http://localhost:{self.port}/hop/{hop + 1}/{name}/{digest}"
        return f"http://localhost:{self.port}/cdn/{name}/{digest}"

    async def _next_hop(self, request: web.Request) -> web.Response:
        hop, name, digest = (request.match_info[k] for k in ("hop", "name", "digest"))
        self.hops_seen.append(int(hop))
        raise web.HTTPTemporaryRedirect(self._hop(int(hop), name, digest))

    async def _cdn(self, request: web.Request) -> web.Response:
        self.cdn_requests.append(dict(request.headers))
        name, digest = request.match_info["name"], request.match_info["digest"]
        blob = requests.get(f"{self.upstream.url}/v2/{name}/blobs/{digest}", timeout=30)
        return web.Response(body=blob.content)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cdn/{name:.+}/{digest}", self._cdn)
        app.router.add_get("/hop/{hop:\\d+}/{name:.+}/{digest}", self._next_hop)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        return app


@pytest.fixture
def cdn_factory(upstream: Distribution) -> Iterator[Callable[..., Cdn]]:
    """``make(hops=1)``: a started CDN stand-in in front of the shared upstream."""
    started: list[Cdn] = []

    def make(hops: int = 1) -> Cdn:
        started.append(Cdn(upstream, hops).start())
        return started[-1]

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def cdn(cdn_factory: Callable[..., Cdn]) -> Cdn:
    return cdn_factory()


def test_blob_redirects_are_followed_without_sending_credentials_to_another_host(
    mirror_factory: MirrorFactory, cdn: Cdn, small_image: PushedImage, tmp_path: Path
) -> None:
    upstream = {"url": cdn.url, "username": "someone", "password": "s3cret-password"}
    mirror = mirror_factory({"hub": {"upstream": [upstream]}})
    skopeo_copy(f"{mirror.host_port}/hub/{small_image.name}:{small_image.tag}", tmp_path / "o")
    assert dir_manifest(tmp_path / "o") == small_image.manifest_bytes
    assert cdn.authorized_requests > 0, "the upstream itself gets the credentials"
    assert cdn.cdn_requests, "the blobs should have come through the redirect"
    assert all("Authorization" not in headers for headers in cdn.cdn_requests)
    assert "s3cret-password" not in mirror.log()


@pytest.mark.parametrize(("hops", "served"), [(2, True), (3, False)], ids=["2-of-2", "3-of-2"])
def test_an_upstream_blob_is_followed_through_at_most_max_redirect_redirects(
    mirror_factory: MirrorFactory,
    cdn_factory: Callable[..., Cdn],
    small_image: PushedImage,
    hops: int,
    served: bool,
) -> None:
    cdn = cdn_factory(hops)
    upstream = {"url": cdn.url, "username": "someone", "password": "s3cret-password"}
    mirror = mirror_factory({"hub": {"upstream": [{**upstream, "max_redirect": 2}]}})
    blob = small_image.largest_blob
    response = mirror.get(f"/v2/hub/{small_image.name}/blobs/{blob.digest}")
    if served:
        assert response.status_code == 200
        assert response.content == blob.read()
        assert cdn.hops_seen == [2]
        assert len(cdn.cdn_requests) == 1
        mirror.wait_for_blobs({blob.digest})
        return
    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    # Two redirects followed (to hops 2 and 3), the third one not.
    assert cdn.hops_seen == [2, 3]
    assert cdn.cdn_requests == []
    wait_until_idle()
    assert blob.digest not in mirror.stored_blobs()
