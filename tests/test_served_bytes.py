"""The access log and `registry_bytes_served_total` count the bytes actually sent: a blob
sent with sendfile (stored, or spooled as it arrives), through TLS (asyncio's copy loop),
in a range, or cut short by its client."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
import requests

from tests.fixtures.access import tls_table
from tests.fixtures.distribution import Distribution
from tests.fixtures.engines import parse_registry_line
from tests.fixtures.mirror import Mirror, MirrorFactory, metric_sample, upstream_entry
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import poll_until
from tests.fixtures.tls import TestPki

REPO = "hub"
HEADERS_MAX = 4096  # status line and headers of a blob answer, at most


def logged_bytes(mirror: Mirror, path: str, count: int) -> list[int]:
    """The byte counts of the first `count` access-log lines of GETs of `path`."""
    found: list[int] = []

    def enough() -> bool:
        found[:] = [
            entry.bytes
            for entry in map(parse_registry_line, mirror.log().splitlines())
            if entry is not None and entry.method == "GET" and entry.path == path
        ]
        return len(found) >= count

    poll_until(enough, 30, what=f"{count} access-log lines of {path}", log_path=mirror.log_path)
    return found[:count]


def served(mirror: Mirror, source: str, verify: str | bool = True) -> float:
    text = requests.get(f"{mirror.url}/metrics", timeout=30, verify=verify).text
    return metric_sample(text, "registry_bytes_served_total", source=source)


def assert_counted(logged: int, body: int) -> None:
    """A line counts the body plus at most the status line and headers."""
    assert body <= logged < body + HEADERS_MAX


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_cold_and_a_warm_blob_are_logged_and_counted_at_their_size(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    test_pki: TestPki,
    tls: bool,
) -> None:
    image = pushed_images.get(upstream, "large", name="served/bytes", size_mib=2)
    blob = image.largest_blob
    extra: dict[str, Any] = {}
    if tls:
        extra["server"] = {"tls": tls_table(test_pki, test_pki.server("registry"))}
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}}, extra=extra)
    path = f"/v2/{REPO}/{image.name}/blobs/{blob.digest}"
    verify: str | bool = str(test_pki.ca_path) if tls else True
    cold = requests.get(mirror.url + path, timeout=60, verify=verify)
    assert cold.status_code == 200 and len(cold.content) == blob.size
    mirror.wait_for_links(f"{REPO}/{image.name}", {blob.digest})
    warm = requests.get(mirror.url + path, timeout=60, verify=verify)
    assert warm.status_code == 200 and len(warm.content) == blob.size

    cold_line, warm_line = logged_bytes(mirror, path, 2)
    assert_counted(cold_line, blob.size)  # spooled as it arrived
    assert_counted(warm_line, blob.size)  # from storage
    assert served(mirror, "upstream", verify) == blob.size
    assert served(mirror, "cache", verify) == blob.size


def test_a_range_of_a_stored_blob_counts_the_range(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream, "large", name="served/range", size_mib=2)
    blob = image.largest_blob
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}})
    path = f"/v2/{REPO}/{image.name}/blobs/{blob.digest}"
    assert len(mirror.get(path).content) == blob.size
    mirror.wait_for_links(f"{REPO}/{image.name}", {blob.digest})
    part = mirror.get(path, headers={"Range": "bytes=1000-100999"})
    assert part.status_code == 206 and len(part.content) == 100_000

    assert_counted(logged_bytes(mirror, path, 2)[1], 100_000)
    assert served(mirror, "cache") == 100_000


def test_a_transfer_its_client_cuts_short_counts_what_went_out(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream, "large", name="served/cut", size_mib=64)
    blob = image.largest_blob
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}})
    path = f"/v2/{REPO}/{image.name}/blobs/{blob.digest}"
    assert len(mirror.get(path).content) == blob.size
    mirror.wait_for_links(f"{REPO}/{image.name}", {blob.digest})

    # Read 1 MiB of the stored 64 MiB blob, then reset the connection (no FIN, no more
    # reading): the kernel buffers hold a few MiB at most, the rest is never sent.
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=30) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: registry\r\n\r\n".encode())
        received = 0
        while received < 1024 * 1024:
            chunk = client.recv(65536)
            assert chunk, "the registry closed the connection early"
            received += len(chunk)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    logged = logged_bytes(mirror, path, 2)[1]
    assert 1024 * 1024 - HEADERS_MAX <= logged < blob.size // 2
    counted = served(mirror, "cache")
    assert 0 < counted <= logged < counted + HEADERS_MAX
