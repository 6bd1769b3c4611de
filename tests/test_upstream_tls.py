"""Upstreams over TLS, as the README's `[[repository."X".upstream]]` keys promise:
`server_ca_bundle` (an upstream whose certificate a private CA signed) and
`client_certificate` / `client_private_key` (an upstream that asks for a client certificate,
mutual TLS). The upstream is a real CNCF Distribution serving HTTPS (`http.tls`, with
`clientcas` for mutual TLS) with certificates from the test PKI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.distribution import Distribution, ServedTls
from tests.fixtures.idle import wait_until_idle
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory
from tests.fixtures.plugin import pusher_for
from tests.fixtures.tls import TestPki

REPO = "secure"


@pytest.fixture
def tls_upstream(
    distribution_factory: Callable[..., Distribution],
    test_pki: TestPki,
    request: pytest.FixtureRequest,
) -> Callable[..., tuple[Distribution, PushedImage]]:
    """``make(mutual=False)``: an HTTPS Distribution (asking for a client certificate the
    test CA signed, with ``mutual``) holding a small image."""

    def make(mutual: bool = False) -> tuple[Distribution, PushedImage]:
        stem = request.node.name[:40]
        tls = ServedTls(
            server=test_pki.server(f"{stem}-upstream"),
            ca=test_pki.ca_path,
            client_ca=test_pki.ca_path if mutual else None,
            client=test_pki.client(f"{stem}-pusher") if mutual else None,
        )
        upstream = distribution_factory(tls=tls)
        pusher = pusher_for(upstream)
        try:
            return upstream, pusher.small_image("tls/app", "1.0")
        finally:
            pusher.client.close()

    return make


def through(mirror_factory: MirrorFactory, upstream: Distribution, **tls: Any) -> Mirror:
    entry = {"url": upstream.url, "connect_timeout_secs": 5, **{k: str(v) for k, v in tls.items()}}
    return mirror_factory({REPO: {"upstream": [entry]}})


def assert_pulls(mirror: Mirror, image: PushedImage) -> None:
    """The manifest and every blob come through byte for byte, and get cached."""
    manifest = mirror.get(f"/v2/{REPO}/{image.name}/manifests/{image.tag}")
    assert manifest.status_code == 200, manifest.text
    assert manifest.content == image.manifest_bytes
    for blob in image.blobs:
        assert mirror.get(f"/v2/{REPO}/{image.name}/blobs/{blob.digest}").content == blob.read()
    mirror.wait_for_blobs(image.all_digests)


def assert_refused(mirror: Mirror, image: PushedImage, upstream: Distribution) -> None:
    """The pull fails as the upstream being unreachable, and no request got through."""
    mark = upstream.mark()
    answer = mirror.get(f"/v2/{REPO}/{image.name}/manifests/{image.tag}")
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert upstream.settled_requests_since(mark) == []  # the handshake failed first
    wait_until_idle()
    assert mirror.stored_blobs() == set()


def test_an_https_upstream_signed_by_a_private_ca_is_pulled_through_with_server_ca_bundle(
    mirror_factory: MirrorFactory,
    tls_upstream: Callable[..., tuple[Distribution, PushedImage]],
    test_pki: TestPki,
) -> None:
    upstream, image = tls_upstream()
    assert upstream.url.startswith("https://")
    mirror = through(mirror_factory, upstream, server_ca_bundle=test_pki.ca_path)
    assert_pulls(mirror, image)


@pytest.mark.parametrize("bundle", ["none", "another-ca"])
def test_an_https_upstream_whose_ca_is_not_trusted_is_refused(
    mirror_factory: MirrorFactory,
    tls_upstream: Callable[..., tuple[Distribution, PushedImage]],
    tmp_path: Path,
    bundle: str,
) -> None:
    upstream, image = tls_upstream()
    tls = {}
    if bundle == "another-ca":
        tls["server_ca_bundle"] = TestPki(tmp_path / "rogue", name="rogue-ca").ca_path
    mirror = through(mirror_factory, upstream, **tls)
    assert_refused(mirror, image, upstream)


def test_an_upstream_asking_for_a_client_certificate_is_pulled_through_with_one(
    mirror_factory: MirrorFactory,
    tls_upstream: Callable[..., tuple[Distribution, PushedImage]],
    test_pki: TestPki,
    request: pytest.FixtureRequest,
) -> None:
    upstream, image = tls_upstream(mutual=True)
    client = test_pki.client(f"{request.node.name[:40]}-mirror", organization="Mirrors")
    mirror = through(
        mirror_factory,
        upstream,
        server_ca_bundle=test_pki.ca_path,
        client_certificate=client.cert,
        client_private_key=client.key,
    )
    assert_pulls(mirror, image)


@pytest.mark.parametrize("certificate", ["none", "another-ca"])
def test_an_upstream_asking_for_a_client_certificate_refuses_a_missing_or_foreign_one(
    mirror_factory: MirrorFactory,
    tls_upstream: Callable[..., tuple[Distribution, PushedImage]],
    test_pki: TestPki,
    tmp_path: Path,
    certificate: str,
) -> None:
    upstream, image = tls_upstream(mutual=True)
    tls: dict[str, Any] = {"server_ca_bundle": test_pki.ca_path}
    if certificate == "another-ca":
        foreign = TestPki(tmp_path / "rogue", name="rogue-ca").client("intruder")
        tls |= {"client_certificate": foreign.cert, "client_private_key": foreign.key}
    mirror = through(mirror_factory, upstream, **tls)
    assert_refused(mirror, image, upstream)
