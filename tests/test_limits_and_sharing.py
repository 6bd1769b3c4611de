"""Limits against upstream answers, revalidation windows, and one download shared by
clients of different speeds."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import ProxiedLayer
from tests.fixtures.ports import poll_until
from tests.fixtures.skopeo import skopeo_copy

REPO = "hub"


def test_a_mutable_tag_checked_within_manifest_check_interval_is_served_without_a_head(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    mirror = mirror_factory(
        {REPO: {"manifest_check_interval": 300, "upstream": [upstream_entry(upstream)]}}
    )
    ref = f"{mirror.host_port}/{REPO}/{small_image.name}:{small_image.tag}"
    skopeo_copy(ref, tmp_path / "cold")
    mirror.wait_for_tag(f"{REPO}/{small_image.name}", small_image.tag)
    mirror.wait_for_blobs({small_image.digest, *small_image.blob_digests})
    mark = upstream.mark()
    skopeo_copy(ref, tmp_path / "warm")
    assert upstream.settled_requests_since(mark) == []


def test_a_manifest_over_max_manifest_size_is_refused_with_size_invalid(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror = mirror_factory(
        {REPO: {"upstream": [upstream_entry(upstream)]}}, global_={"max_manifest_size": "64B"}
    )
    response = mirror.get(f"/v2/{REPO}/{small_image.name}/manifests/{small_image.tag}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "SIZE_INVALID"


def test_a_blob_over_max_blob_size_is_refused_before_any_byte_is_sent(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror = mirror_factory(
        {REPO: {"upstream": [upstream_entry(upstream)]}}, global_={"max_blob_size": "16B"}
    )
    blob = small_image.largest_blob
    path = f"/v2/{REPO}/{small_image.name}/blobs/{blob.digest}"
    for response in (mirror.get(path), mirror.head(path)):
        assert response.status_code == 400
    assert mirror.get(path).json()["errors"][0]["code"] == "SIZE_INVALID"
    assert blob.digest not in mirror.stored_blobs()


def stalled_client(url: str) -> socket.socket:
    """A client that asks for the blob, reads a few bytes and then stops reading."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    return sock


def mirrored(mirror_factory: MirrorFactory, served: ProxiedLayer) -> tuple[Mirror, str]:
    """A registry of the layer's upstream (through its proxy), and the layer's URL there."""
    mirror = mirror_factory({REPO: {"upstream": [{"url": served.proxy.url}]}})
    return mirror, f"{mirror.url}/v2/{REPO}/{served.name}/blobs/{served.layer.digest}"


def test_a_stalled_client_neither_slows_another_client_nor_the_caching(
    mirror_factory: MirrorFactory, proxied_layer: Callable[..., ProxiedLayer]
) -> None:
    served = proxied_layer(32)
    mirror, url = mirrored(mirror_factory, served)
    stalled = stalled_client(url)
    try:
        started = time.monotonic()
        body = requests.get(url, timeout=60).content
        assert hashlib.sha256(body).hexdigest() == served.layer.digest[7:]
        assert time.monotonic() - started < 20
        mirror.wait_for_blobs({served.layer.digest})
    finally:
        stalled.close()


def test_a_client_that_disconnects_does_not_cancel_the_download_for_the_others(
    mirror_factory: MirrorFactory, proxied_layer: Callable[..., ProxiedLayer]
) -> None:
    # Paced to about two seconds, so the others come while the download still runs.
    served = proxied_layer(16, bytes_per_sec=8 * 1024 * 1024)
    mirror, url = mirrored(mirror_factory, served)
    mark = served.upstream.mark()
    stalled_client(url).close()
    # The registry saw it leave (its stream ended) while the download goes on.
    poll_until(
        lambda: mirror.metric("registry_upstream_streams_in_flight") == 0,
        10,
        what="the registry to notice the client left",
    )
    body = requests.get(url, timeout=60).content
    assert hashlib.sha256(body).hexdigest() == served.layer.digest[7:]
    mirror.wait_for_blobs({served.layer.digest})
    again = requests.get(url, timeout=60).content
    assert again == body
    gets = [
        entry
        for entry in served.upstream.settled_requests_since(mark)
        if entry.method == "GET" and entry.path.endswith(served.layer.digest)
    ]
    assert len(gets) == 1, "the download was started again after the client left"
