"""Hostile upstreams (issue 12): a CDN with a token realm of its own, an https upstream
naming a plain-http realm, redirects and realms into private and metadata addresses, a
blob without Content-Length, a tag altered without a digest header, a forged digest
header, a status line dripped a byte at a time, credentials written into a URL.

Each runs the registry as a real process in front of a real Distribution; the stand-ins in
`tests/fixtures/hostile_upstream.py` misbehave where a real registry would not."""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.hostile_upstream import Cdn, DripServer, HostileUpstream, RealmServer
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import MirrorFactory
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import poll_until
from tests.fixtures.skopeo import dir_blob, dir_manifest, skopeo_copy
from tests.fixtures.tls import TestPki
from tests.test_config import run_cli

CREDENTIALS = ("someone", "s3cret-password")
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def test_credentials_go_to_the_upstream_and_its_own_realm_never_to_a_cdn_or_the_cdns_realm(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    docker_list_image: PushedImage,
    stand_ins: list[Any],
    tmp_path: Path,
) -> None:
    upstream_realm = RealmServer(CREDENTIALS, name="upstream-realm").start()
    cdn_realm = RealmServer(None, name="cdn-realm").start()
    cdn = Cdn(upstream.url, cdn_realm).start()
    front = HostileUpstream(upstream.url).start()
    stand_ins.extend([upstream_realm, cdn_realm, cdn, front])
    front.behaviour.realm = upstream_realm
    front.behaviour.blob_location = cdn.location
    user, password = CREDENTIALS
    mirror = mirror_factory(
        {"hub": {"upstream": [{"url": front.url, "username": user, "password": password}]}}
    )

    for image, out in ((small_image, "a"), (docker_list_image, "b")):
        skopeo_copy(
            f"{mirror.host_port}/hub/{image.name}:{image.tag}", tmp_path / out, all_images=True
        )
        assert dir_manifest(tmp_path / out) == image.manifest_bytes

    assert cdn.served > 0, "the blobs came through the CDN"
    # The upstream's own realm got the credentials; the upstream got its realm's token.
    assert upstream_realm.requests
    assert all(r.authorization for r in upstream_realm.requests)
    assert any(r.authorization == f"Bearer {upstream_realm.token}" for r in front.requests)
    # The CDN's realm was asked anonymously; the CDN saw only its own realm's token.
    assert cdn_realm.requests
    assert [r.authorization for r in cdn_realm.requests] == [None] * len(cdn_realm.requests)
    assert {r.authorization for r in cdn.requests} <= {None, f"Bearer {cdn_realm.token}"}
    # The CDN's challenge was not kept as the upstream's: no request to the upstream ever
    # carried the CDN realm's token.
    assert all(r.authorization != f"Bearer {cdn_realm.token}" for r in front.requests)
    assert password not in mirror.log() and upstream_realm.token not in mirror.log()


def test_an_https_upstream_sends_no_credentials_to_a_plain_http_realm(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    test_pki: TestPki,
    stand_ins: list[Any],
) -> None:
    pair = test_pki.server("hostile-upstream")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    realm = RealmServer(None, name="plain-realm").start()
    front = HostileUpstream(upstream.url, ssl_context=context).start()
    stand_ins.extend([realm, front])
    front.behaviour.realm = realm
    assert front.url.startswith("https://") and realm.url.startswith("http://")
    user, password = CREDENTIALS
    entry = {
        "url": front.url,
        "username": user,
        "password": password,
        "server_ca_bundle": str(test_pki.ca_path),
    }
    mirror = mirror_factory({"hub": {"upstream": [entry]}})

    response = mirror.get(
        f"/v2/hub/{small_image.name}/manifests/{small_image.tag}", headers={"Accept": ACCEPT}
    )
    assert response.status_code == 200
    assert response.content == small_image.manifest_bytes
    assert realm.requests, "an anonymous token was asked for"
    assert all(r.authorization is None for r in realm.requests)
    assert "account=" not in " ".join(r.path_qs for r in realm.requests)
    assert "plain-http token realm" in mirror.log()


@pytest.mark.parametrize(
    ("where", "refused"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a cloud metadata"),
        ("http://10.255.255.1:8080/internal/admin", "10.255.255.1 is a private address"),
        ("http://[fd00::5]/x", "fd00::5 is a private address"),
    ],
)
def test_a_redirect_into_a_private_or_metadata_address_is_refused_without_connecting(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    stand_ins: list[Any],
    where: str,
    refused: str,
) -> None:
    front = HostileUpstream(upstream.url).start()
    stand_ins.append(front)
    front.behaviour.manifest_location = where
    # Were the redirect followed, the unroutable address would hold it for the timeout.
    entry = {"url": front.url, "connect_timeout_secs": 8}
    mirror = mirror_factory({"hub": {"upstream": [entry]}})
    began = time.monotonic()
    response = mirror.get("/v2/hub/some/image/manifests/latest", headers={"Accept": ACCEPT})
    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert time.monotonic() - began < 4
    mirror.wait_for_log(refused)


def test_a_token_realm_at_a_private_address_is_refused_and_the_upstream_stays_healthy(
    mirror_factory: MirrorFactory, upstream: Distribution, stand_ins: list[Any]
) -> None:
    realm = RealmServer(None).start()
    front = HostileUpstream(upstream.url).start()
    stand_ins.extend([realm, front])
    front.behaviour.realm = realm
    front.behaviour.challenge_realm = "http://192.168.77.77/token"
    mirror = mirror_factory(
        {"hub": {"upstream": [{"url": front.url, "connect_timeout_secs": 8}]}},
        global_={"upstream_failure_threshold": 1},
    )
    for _ in range(3):
        began = time.monotonic()
        response = mirror.get("/v2/hub/some/image/manifests/latest", headers={"Accept": ACCEPT})
        assert response.status_code == 503
        assert time.monotonic() - began < 4
    assert realm.requests == []
    assert "token realm to 192.168.77.77 refused" in mirror.log()
    # A refused target is not "the upstream is down": the breaker (threshold 1) stays shut.
    assert front.count("GET", "/manifests/") >= 1
    assert "circuit open" not in mirror.log()


def test_a_blob_the_upstream_streams_without_content_length_pulls_on_the_first_try(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    unique_repo: str,
    stand_ins: list[Any],
    tmp_path: Path,
) -> None:
    private = distribution_factory()
    image = pusher_for(private).large_image(unique_repo, "1.0", size_mib=6)
    front = HostileUpstream(private.url).start()
    stand_ins.append(front)
    front.behaviour.chunked_blobs = True
    mirror = mirror_factory({"hub": {"upstream": [{"url": front.url}]}})
    layer = max(image.blobs, key=lambda blob: blob.size)

    # One client first, by hand: chunked framing that a client can parse.
    response = requests.get(f"{mirror.url}/v2/hub/{unique_repo}/blobs/{layer.digest}", timeout=60)
    assert response.status_code == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == layer.digest
    # And a real client pulling the whole image (another blob is cold for it).
    skopeo_copy(f"{mirror.host_port}/hub/{unique_repo}:1.0", tmp_path / "o")
    assert dir_manifest(tmp_path / "o") == image.manifest_bytes
    for blob in image.blobs:
        data = dir_blob(tmp_path / "o", blob.digest)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
    mirror.wait_for_blobs(set(image.blob_digests))


def _altered(manifest: bytes) -> bytes:
    document = json.loads(manifest)
    document.setdefault("annotations", {})["org.example.injected"] = "by a proxy"
    return json.dumps(document).encode()


def test_a_tag_sent_without_a_digest_header_is_checked_again_before_immutability_pins_it(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    unique_repo: str,
    stand_ins: list[Any],
) -> None:
    private = distribution_factory()
    image = pusher_for(private).small_image(unique_repo, "1.0")
    front = HostileUpstream(private.url).start()
    stand_ins.append(front)
    altered = _altered(image.manifest_bytes)
    front.behaviour.drop_digest_header = True
    front.behaviour.manifest_bodies = {"1.0": altered}
    mirror = mirror_factory({"hub": {"immutable_tags": True, "upstream": [{"url": front.url}]}})
    name, path = f"hub/{unique_repo}", f"/v2/hub/{unique_repo}/manifests/1.0"
    tag_file = mirror.data_root / "repositories" / name / "_manifests" / "tags" / "1.0"

    first = mirror.get(path, headers={"Accept": ACCEPT})
    assert first.content == altered  # nothing to check it against: it is served ...
    mirror.wait_for_tag(name, "1.0")
    assert json.loads(tag_file.read_bytes())["confirmed"] is False  # ... but not trusted

    # The upstream is honest again: the next pull asks, finds the real digest, serves it.
    front.behaviour.drop_digest_header = False
    front.behaviour.manifest_bodies = {}
    second = mirror.get(path, headers={"Accept": ACCEPT})
    assert second.content == image.manifest_bytes
    poll_until(
        lambda: (
            json.loads(tag_file.read_bytes())
            == {**json.loads(tag_file.read_bytes()), "digest": image.digest, "confirmed": True}
        ),
        30,
        what="the tag stored confirmed",
    )
    # Confirmed: from now on the immutable tag is answered without asking.
    before = front.count("HEAD", "/manifests/") + front.count("GET", "/manifests/")
    third = mirror.get(path, headers={"Accept": ACCEPT})
    assert third.content == image.manifest_bytes
    assert front.count("HEAD", "/manifests/") + front.count("GET", "/manifests/") == before


def test_a_manifest_whose_digest_header_does_not_match_is_reported_as_such(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    stand_ins: list[Any],
) -> None:
    front = HostileUpstream(upstream.url).start()
    stand_ins.append(front)
    front.behaviour.forged_digest_header = "sha256:" + "0" * 64
    mirror = mirror_factory({"hub": {"upstream": [{"url": front.url}]}})
    response = mirror.get(
        f"/v2/hub/{small_image.name}/manifests/{small_image.tag}", headers={"Accept": ACCEPT}
    )
    assert response.status_code == 503
    error = response.json()["errors"][0]
    assert "does not match its digest" in error["message"]
    assert "nothing cached" not in error["message"]


def test_an_upstream_that_drips_its_answer_is_cut_off_by_the_request_timeout(
    mirror_factory: MirrorFactory, stand_ins: list[Any]
) -> None:
    drip = DripServer(interval=0.5).start()
    stand_ins.append(drip)
    entry = {"url": drip.url, "request_timeout_secs": 2, "read_timeout_secs": 30}
    mirror = mirror_factory({"hub": {"upstream": [entry]}})
    began = time.monotonic()
    response = mirror.get("/v2/hub/some/image/manifests/latest", headers={"Accept": ACCEPT})
    elapsed = time.monotonic() - began
    assert response.status_code == 503
    assert elapsed < 6, f"answered after {elapsed:.1f}s"
    assert drip.connections >= 1


def test_credentials_in_an_upstream_url_stop_start_up_without_being_shown(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[blob_store.fs]\nroot_dir = "{tmp_path / "data"}"\n'
        '[[repository."hub".upstream]]\nurl = "https://robot:t0p-s3cret@registry.example"\n'
    )
    for command in ("check-config", "server"):
        result = run_cli("-c", str(config), command)
        assert result.returncode == 2, result.stderr
        assert 'repository."hub".upstream[0].url' in result.stderr
        assert "use username/password" in result.stderr
        assert "t0p-s3cret" not in result.stderr + result.stdout
        assert "robot" not in result.stderr + result.stdout
