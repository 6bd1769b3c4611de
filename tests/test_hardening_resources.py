"""Bounded resources (issue 12, items 4, 5, 8 and 14), on real processes: slow downloads
cannot starve the short requests, the catalog pages without walking the tree, a cached blob
under file-descriptor pressure is never "unknown", and the server caps its connections and
cuts a client that stopped reading."""

from __future__ import annotations

import hashlib
import json
import resource
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import poll_until

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def warm_blob(mirror: Mirror, name: str, digest: str) -> None:
    response = mirror.get(f"/v2/{name}/blobs/{digest}")
    assert response.status_code == 200
    mirror.wait_for_blobs({digest})
    mirror.wait_for_links(name, {digest})


def warm_small_blob(
    mirror_factory: MirrorFactory, upstream: Distribution, image: PushedImage
) -> tuple[Mirror, str, str]:
    """A registry with one blob of `image` cached: (registry, name, digest)."""
    mirror = mirror_factory({"hub": {"upstream": [upstream_entry(upstream)]}})
    name, digest = f"hub/{image.name}", image.blob_digests[0]
    warm_blob(mirror, name, digest)
    return mirror, name, digest


def test_abandoned_slow_downloads_hold_no_manifest_back_and_a_full_cap_answers_429(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    unique_repo: str,
    faulty_proxy: Callable[..., FaultyProxy],
) -> None:
    private = distribution_factory()
    pusher = pusher_for(private)
    images = [pusher.large_image(f"{unique_repo}-{i}", "1.0", size_mib=3, seed=i) for i in range(5)]
    proxy = faulty_proxy(private.url)
    proxy.faults.throttle_bytes_per_sec = 512 * 1024  # each blob takes about 6 s
    entry = {"url": proxy.url, "max_concurrent_downloads": 3, "connect_timeout_secs": 2}
    mirror = mirror_factory({"hub": {"upstream": [entry]}})

    def blob_url(image: PushedImage) -> str:
        return f"{mirror.url}/v2/hub/{image.name}/blobs/{image.largest_blob.digest}"

    # Three clients start a cold blob each and leave: the downloads go on (for the cache).
    for image in images[:3]:
        with requests.get(blob_url(image), stream=True, timeout=30) as response:
            assert response.status_code == 200
            response.raw.read(1024)
    poll_until(lambda: proxy.in_flight >= 3, 10, what="three downloads running")

    # A manifest of another image: answered at once, beside the busy downloads.
    began = time.monotonic()
    manifest = mirror.get(f"/v2/hub/{images[4].name}/manifests/1.0", headers={"Accept": ACCEPT})
    assert manifest.status_code == 200
    assert time.monotonic() - began < 1.5

    # A fourth download finds no slot within connect_timeout_secs: 429, retry later.
    began = time.monotonic()
    busy = mirror.get(f"/v2/hub/{images[3].name}/blobs/{images[3].largest_blob.digest}")
    waited = time.monotonic() - began
    assert busy.status_code == 429, busy.text
    assert busy.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(busy.headers["Retry-After"]) >= 1
    assert 1.5 < waited < 6
    assert proxy.max_in_flight <= 4  # three downloads and the manifest, never more
    # The abandoned downloads finished into the cache.
    mirror.wait_for_blobs({image.largest_blob.digest for image in images[:3]}, deadline_s=60)


def _write_repositories(root: Path, count: int) -> list[str]:
    record = json.dumps(
        {"digest": "sha256:" + "a" * 64, "media_type": ACCEPT, "size": 1, "updated_at": 1.0}
    ).encode()
    names = []
    for index in range(count):
        name = f"hub/bulk/g{index // 100:03d}/r{index % 100:02d}"
        folder = root / "repositories" / name / "_manifests" / "tags"
        folder.mkdir(parents=True)
        (folder / "latest").write_bytes(record)
        names.append(name)
    return names


def test_catalog_pages_cost_what_they_show_and_never_delay_a_cached_blob_hit(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror, name, digest = warm_small_blob(mirror_factory, upstream, small_image)
    bulk = _write_repositories(mirror.data_root, 20_000)
    expected = sorted(bulk, key=lambda n: tuple(n.split("/")))

    # A whole listing, page by page, in path order, each name once.
    listed: list[str] = []
    whole_began = time.monotonic()
    url = "/v2/_catalog?n=5000"
    while url:
        page = mirror.get(url)
        assert page.status_code == 200
        listed += page.json()["repositories"]
        link = page.headers.get("Link")
        url = link[1 : link.index(">")] if link else ""
    whole_listing_secs = time.monotonic() - whole_began
    assert [n for n in listed if n.startswith("hub/bulk/")] == expected
    assert len(listed) == len(set(listed))

    # Twelve clients page through at once while another times cached blob hits.
    stop = threading.Event()
    hits: list[float] = []

    def time_hits() -> None:
        while not stop.is_set():
            began = time.monotonic()
            response = mirror.get(f"/v2/{name}/blobs/{digest}")
            assert response.status_code == 200
            hits.append(time.monotonic() - began)

    def page_through(start: int) -> float:
        slowest = 0.0
        last = expected[start]
        for _ in range(5):
            began = time.monotonic()
            page = mirror.get(f"/v2/_catalog?n=200&last={last}")
            slowest = max(slowest, time.monotonic() - began)
            names = page.json()["repositories"]
            assert names == expected[start + 1 : start + 201]
            start, last = start + 200, names[-1]
        return slowest

    timer = threading.Thread(target=time_hits)
    timer.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            slowest_pages = list(pool.map(page_through, range(0, 18_000, 1500)))
    finally:
        stop.set()
        timer.join(30)
    assert hits, "no blob hit was timed"
    assert max(hits) < 1.0, f"a cached blob hit took {max(hits):.2f}s"
    # A page of 200 costs a hundredth of the whole listing: twelve at once still take far
    # less than it. Pages that each walk everything take longer than the whole listing
    # (30 s against 9 s, tried). Compared within the run, not with a fixed bound, as a
    # loaded machine slows both (1.5 s against 10 s on 2 idle cores; 1.4 s against 15 s
    # beside two busy loops, where the fixed 2 s bound failed 3 runs in 3 at 2.7-3.0 s).
    assert max(slowest_pages) < whole_listing_secs / 2, (
        f"a catalog page took {max(slowest_pages):.2f}s, "
        f"the whole listing {whole_listing_secs:.2f}s"
    )


def _open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_a_cached_blob_under_file_descriptor_pressure_is_503_never_blob_unknown(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror, name, digest = warm_small_blob(mirror_factory, upstream, small_image)
    assert mirror.process is not None
    pid = mirror.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (_open_files(pid) + 12, hard))
    # Running out of descriptors makes asyncio log failed accepts (with a traceback).
    mirror.expect_failure("accept() fails with EMFILE while descriptors run out")

    def hit(_: int) -> int | str:
        try:
            return requests.get(
                f"{mirror.url}/v2/{name}/blobs/{digest}",
                headers={"Connection": "close"},
                timeout=30,
            ).status_code
        except requests.RequestException as error:
            return type(error).__name__

    with ThreadPoolExecutor(60) as pool:
        outcomes = list(pool.map(hit, range(300)))
    statuses = [o for o in outcomes if isinstance(o, int)]
    assert 404 not in statuses, outcomes
    assert set(statuses) <= {200, 503}, outcomes
    assert 503 in statuses, "the limit was never reached: the test proves nothing"
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert mirror.get(f"/v2/{name}/blobs/{digest}").status_code == 200


def test_connections_beyond_max_connections_are_answered_503_and_closed(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = mirror_factory(
        {"hub": {"upstream": [upstream_entry(upstream)]}}, extra={"server": {"max_connections": 8}}
    )
    idle = [socket.create_connection(("127.0.0.1", mirror.port), timeout=10) for _ in range(8)]
    try:
        poll_until(lambda: _refused_once(mirror.port), 10, what="a refusal beyond the cap")
        extra = socket.create_connection(("127.0.0.1", mirror.port), timeout=10)
        with extra:
            answer = _read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in answer and b'"code":"UNAVAILABLE"' in answer
    finally:
        for sock in idle:
            sock.close()
    poll_until(
        lambda: mirror.get("/v2/").status_code == 200, 10, what="room again once they closed"
    )
    assert "max_connections=8" in mirror.log()


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _refused_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return _read_all(sock).startswith(b"HTTP/1.1 503 ")


def test_a_client_that_stops_reading_is_disconnected_after_the_write_timeout(
    mirror_factory: MirrorFactory, distribution_factory: Any, unique_repo: str
) -> None:
    private = distribution_factory()
    image = pusher_for(private).large_image(unique_repo, "1.0", size_mib=32)
    layer = image.largest_blob
    mirror = mirror_factory(
        {"hub": {"upstream": [{"url": private.url}]}},
        extra={"server": {"write_timeout_secs": 2}},
    )
    warm_blob(mirror, f"hub/{unique_repo}", layer.digest)

    with socket.create_connection(("127.0.0.1", mirror.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        request = f"GET /v2/hub/{unique_repo}/blobs/{layer.digest} HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request.encode())
        mirror.wait_for_log("client accepted no data", deadline_s=20)
        received = 0
        try:
            while chunk := sock.recv(1024 * 1024):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < layer.size, "the whole blob was sent: nothing stalled"
    # The registry still serves everyone else.
    response = mirror.get(f"/v2/hub/{unique_repo}/blobs/{layer.digest}")
    assert hashlib.sha256(response.content).hexdigest() == layer.digest.split(":", 1)[1]
