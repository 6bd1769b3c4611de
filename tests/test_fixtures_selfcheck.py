"""Self-check of tests/fixtures: real Distribution, token server, images and skopeo.

Run: ``pytest -q tests/test_fixtures_selfcheck.py -p tests.fixtures.plugin``
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import signal
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures import ports
from tests.fixtures.distribution import Distribution
from tests.fixtures.images import (
    HELLO_TEXT,
    ImagePusher,
    PushedImage,
    build_multi_platform,
    build_small_image,
)
from tests.fixtures.mirror import Mirror, MirrorFactory, mirror_config, upstream_entry
from tests.fixtures.oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltManifest,
)
from tests.fixtures.plugin import ProxiedLayer, PushedImageCache, pusher_for
from tests.fixtures.ports import (
    ServerStartError,
    free_port,
    refusing_port,
    silent_port,
    wait_for_http,
    wait_for_port,
)
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.fixtures.registry_client import Challenge, RegistryError
from tests.fixtures.skopeo import (
    SkopeoError,
    dir_blob,
    dir_manifest,
    skopeo_copy,
    skopeo_inspect,
    skopeo_inspect_raw,
)
from tests.fixtures.token_server import TokenServer

UPSTREAMS = ["upstream", "upstream_basic", "upstream_token"]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_files(blob: bytes) -> dict[str, bytes]:
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def assert_dir_copy_matches(dest: Path, manifest: BuiltManifest) -> None:
    assert sha256(dir_manifest(dest)) == manifest.digest
    for blob in manifest.blobs:
        data = dir_blob(dest, blob.digest)
        assert (sha256(data), len(data)) == (blob.digest, blob.size)


# -- ports ---------------------------------------------------------------------------
def test_free_port_returns_a_port_nobody_listens_on() -> None:
    port = free_port()
    assert 1024 < port < 65536
    with pytest.raises(ServerStartError):
        wait_for_port("127.0.0.1", port, 0.1)


def test_waiting_for_a_dead_server_fails_with_its_log(tmp_path: Path, refused_url: str) -> None:
    log = tmp_path / "server.log"
    log.write_text("panic: something went wrong at startup\n")
    with pytest.raises(ServerStartError, match="something went wrong at startup"):
        wait_for_http(f"{refused_url}/v2/", 0.2, log_path=log)


def test_a_refusing_port_refuses_and_a_silent_port_accepts_but_never_answers() -> None:
    with refusing_port() as port, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with silent_port() as port, socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)


def test_a_server_whose_port_was_taken_meanwhile_is_started_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", 0))
        taker.listen(1)
        taken = taker.getsockname()[1]
        picks = iter([taken])
        real = ports.free_port
        monkeypatch.setattr(
            ports, "free_port", lambda host="127.0.0.1": next(picks, None) or real(host)
        )
        server = RedisServer(tmp_path / "redis").start()
        try:
            assert server.port != taken
            assert "Address already in use" in server.log_text()  # the first try failed
        finally:
            server.stop()


def test_a_stopped_registry_that_logged_a_traceback_or_exited_with_an_error_has_problems(
    tmp_path: Path, upstream: Distribution
) -> None:
    config = mirror_config(
        tmp_path, {"hub": {"upstream": [upstream_entry(upstream)]}}, port=free_port()
    )
    mirror = Mirror(tmp_path, config, pick_port=True).start()
    assert mirror.is_idle()
    assert mirror.process is not None
    mirror.process.kill()  # a crash, not a stop
    mirror.process.wait(10)
    assert mirror.stop() == -signal.SIGKILL
    with mirror.log_path.open("a") as log:
        log.write("Traceback (most recent call last):\n  File ...\nValueError: boom\n")
    problems = mirror.problems()
    assert len(problems) == 2
    assert "Traceback" in problems[0] and "ValueError: boom" in problems[0]
    assert "exited with -9" in problems[1]
    mirror.expect_failure("this test makes it crash")
    assert mirror.problems() == []


def test_a_registry_stopped_with_sigterm_or_killed_on_purpose_has_no_problems(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        mirror = mirror_factory({"hub": {"upstream": [upstream_entry(upstream)]}})
        assert mirror.stop(sig) == (0 if sig == signal.SIGTERM else -sig)
        assert mirror.problems() == []


def test_counting_upstream_requests_waits_for_a_cache_job_still_running(
    mirror_factory: MirrorFactory,
    proxied_layer: Callable[..., ProxiedLayer],
    redis_server: RedisServer,
) -> None:
    served = proxied_layer(8, bytes_per_sec=4 * 1024 * 1024)  # the job runs two seconds
    upstream, layer = served.upstream, served.layer
    cacher = mirror_factory(
        {"hub": {"upstream": [{"url": served.proxy.url}]}},
        command="cacher",
        redis_url=redis_server.url,
    )
    before = upstream.mark()
    enqueue_jobs(
        redis_server.url,
        [CacheJob(JobKind.BLOB, "hub", served.name, layer.digest, size=layer.size)],
    )
    # The mark waits until the cacher is idle: the job is done, its GET before the mark.
    mark = upstream.mark()
    assert layer.digest in cacher.stored_blobs()
    fetched = [e for e in upstream.requests_since(before) if e.path.endswith(layer.digest)]
    assert [e.method for e in fetched] == ["GET"]
    assert upstream.settled_requests_since(mark) == []


# -- every auth mode x every image kind ------------------------------------------------
@pytest.mark.parametrize("upstream_name", UPSTREAMS)
@pytest.mark.parametrize("kind", ["small", "index", "docker_list"])
def test_each_upstream_serves_each_pushed_image_kind_to_skopeo(
    request: pytest.FixtureRequest,
    pushed_images: PushedImageCache,
    tmp_path: Path,
    upstream_name: str,
    kind: str,
) -> None:
    dist: Distribution = request.getfixturevalue(upstream_name)
    image = pushed_images.get(dist, kind)  # type: ignore[arg-type]

    skopeo_copy(image.ref, tmp_path / "all", creds=dist.credentials, all_images=True)

    assert dir_manifest(tmp_path / "all") == image.manifest_bytes
    for manifest in image.manifests:
        if image.is_index:
            assert sha256(dir_manifest(tmp_path / "all", manifest.digest)) == manifest.digest
        for blob in manifest.blobs:
            assert sha256(dir_blob(tmp_path / "all", blob.digest)) == blob.digest
    raw = skopeo_inspect_raw(image.ref, creds=dist.credentials)
    assert raw == image.manifest_bytes


def test_an_anonymous_upstream_serves_a_pushed_image(
    small_image: PushedImage, tmp_path: Path
) -> None:
    skopeo_copy(small_image.ref, tmp_path)

    manifest = json.loads(dir_manifest(tmp_path))
    assert manifest["mediaType"] == OCI_MANIFEST
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        files.update(layer_files(dir_blob(tmp_path, layer["digest"])))
    assert files["hello.txt"] == HELLO_TEXT
    config = json.loads(dir_blob(tmp_path, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["diff_ids"] == [
        sha256(gzip.decompress(dir_blob(tmp_path, layer["digest"]))) for layer in manifest["layers"]
    ]


def test_skopeo_picks_the_requested_platform_from_an_oci_index(
    multi_platform_image: PushedImage, tmp_path: Path
) -> None:
    assert multi_platform_image.media_type == OCI_INDEX
    arm64 = multi_platform_image.image.for_platform("arm64")  # type: ignore[union-attr]

    skopeo_copy(multi_platform_image.ref, tmp_path, override_arch="arm64")

    assert_dir_copy_matches(tmp_path, arm64)
    # skopeo inspect reports the digest of the *index*, but the chosen instance's arch.
    inspected = skopeo_inspect(multi_platform_image.ref, override_arch="arm64")
    assert inspected["Digest"] == multi_platform_image.digest
    assert inspected["Architecture"] == "arm64"


def test_multi_platform_manifests_share_one_layer() -> None:
    index = build_multi_platform()
    amd64, arm64 = index.manifests
    shared = {b.digest for b in amd64.blobs} & {b.digest for b in arm64.blobs}
    assert len(shared) == 1
    assert len(index.blobs) == 5  # 2 configs + 1 shared + 2 per-arch layers


def test_docker_manifest_list_uses_docker_media_types(docker_list_image: PushedImage) -> None:
    assert docker_list_image.media_type == DOCKER_MANIFEST_LIST
    index = json.loads(docker_list_image.manifest_bytes)
    assert {m["mediaType"] for m in index["manifests"]} == {DOCKER_MANIFEST}
    for manifest in docker_list_image.manifests:
        body = json.loads(manifest.raw)
        assert body["config"]["mediaType"] == DOCKER_CONFIG
        assert {layer["mediaType"] for layer in body["layers"]} == {DOCKER_LAYER_GZIP}


def test_images_are_byte_for_byte_deterministic() -> None:
    assert build_small_image().raw == build_small_image().raw
    assert build_multi_platform().raw == build_multi_platform().raw
    assert build_small_image(b"other\n").digest != build_small_image().digest


# -- auth modes -------------------------------------------------------------------------
def test_htpasswd_upstream_rejects_anonymous_and_wrong_credentials(
    upstream_basic: Distribution, pushed_images: PushedImageCache, tmp_path: Path
) -> None:
    image = pushed_images.get(upstream_basic, "small")
    anonymous = requests.get(f"{upstream_basic.url}/v2/", timeout=10)
    assert anonymous.status_code == 401
    assert Challenge.parse(anonymous.headers["WWW-Authenticate"]).scheme == "basic"
    wrong = requests.get(f"{upstream_basic.url}/v2/", auth=("testuser", "nope"), timeout=10)
    assert wrong.status_code == 401
    assert upstream_basic.credentials is not None
    right = requests.get(f"{upstream_basic.url}/v2/", auth=upstream_basic.credentials, timeout=10)
    assert right.status_code == 200
    with pytest.raises(SkopeoError, match=r"unauthorized|401"):
        skopeo_copy(image.ref, tmp_path)


def test_token_upstream_points_clients_at_the_token_server(
    upstream_token: Distribution, token_server: TokenServer
) -> None:
    response = requests.get(f"{upstream_token.url}/v2/fixtures/small/manifests/latest", timeout=10)
    assert response.status_code == 401
    challenge = Challenge.parse(response.headers["WWW-Authenticate"])
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == token_server.realm
    assert challenge.params["service"] == "test"
    assert challenge.params["scope"] == "repository:fixtures/small:pull"


def test_token_server_counts_token_requests_of_a_pull(
    upstream_token: Distribution,
    token_server: TokenServer,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> None:
    image = pushed_images.get(upstream_token, "small")
    mark = token_server.mark()

    skopeo_copy(image.ref, tmp_path / "auth", creds=upstream_token.credentials)
    skopeo_copy(image.ref, tmp_path / "anon")

    requests_ = token_server.requests_since(mark)
    assert [(r.scopes, r.basic_auth, r.status) for r in requests_] == [
        ((f"repository:{image.name}:pull",), True, 200),
        ((f"repository:{image.name}:pull",), False, 200),
    ]
    assert requests_[1].granted[0].actions == ("pull",)


def test_registry_client_reuses_its_token(
    upstream_token: Distribution, token_server: TokenServer, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream_token, "small")
    pusher = pusher_for(upstream_token)
    mark = token_server.mark()
    for _ in range(3):
        assert pusher.get_manifest(image.name, image.tag)[2] == image.digest
    assert len(token_server.requests_since(mark)) == 1


def test_token_server_refuses_bad_or_missing_credentials(tmp_path: Path) -> None:
    with TokenServer(tmp_path, users={"u": "p"}, allow_anonymous=False, expires_in=42) as server:
        params = {"service": "test", "scope": "repository:a/b:pull,push"}
        assert requests.get(server.realm, params=params, timeout=10).status_code == 401
        bad = requests.get(server.realm, params=params, auth=("u", "x"), timeout=10)
        assert bad.status_code == 401
        good = requests.get(server.realm, params=params, auth=("u", "p"), timeout=10)
        body = good.json()
        assert good.status_code == 200
        assert body["token"] == body["access_token"]
        assert body["expires_in"] == 42
        claims = server.decode(body["token"])
        assert claims["access"] == [
            {"type": "repository", "name": "a/b", "actions": ["pull", "push"]}
        ]
        assert claims["exp"] - claims["iat"] == 42
        assert [r.status for r in server.token_requests] == [401, 401, 200]


# -- access log -------------------------------------------------------------------------
def test_the_access_log_counts_exactly_the_requests_of_one_pull(
    upstream: Distribution, small_image: PushedImage, tmp_path: Path
) -> None:
    mark = upstream.mark()

    skopeo_copy(small_image.ref, tmp_path)

    entries = upstream.settled_requests_since(mark)
    blob_gets = sorted((e.path, e.bytes) for e in entries if "/blobs/" in e.path)
    assert [(e.method, e.path, e.status) for e in entries if "/blobs/" not in e.path] == [
        ("GET", "/v2/", 200),
        ("GET", f"/v2/{small_image.name}/manifests/{small_image.tag}", 200),
    ]
    assert blob_gets == sorted(
        (f"/v2/{small_image.name}/blobs/{b.digest}", b.size) for b in small_image.blobs
    )
    assert all(e.method == "GET" and e.status == 200 for e in entries)
    without_ping = upstream.requests_since(mark, exclude_ping=True)
    assert len(without_ping) == len(entries) - 1


def test_the_access_log_records_queries_and_error_statuses(upstream: Distribution) -> None:
    mark = upstream.mark()
    response = requests.get(f"{upstream.url}/v2/no/such/tags/list?n=1", timeout=10)
    assert response.status_code == 404

    entries = upstream.settled_requests_since(mark, min_count=1)

    assert [(e.method, e.path, e.query, e.status) for e in entries] == [
        ("GET", "/v2/no/such/tags/list", "n=1", 404)
    ]
    assert entries[0].bytes == len(response.content)
    assert entries[0].user_agent.startswith("python-requests/")


def test_access_log_hides_readiness_probes_unless_asked(upstream: Distribution) -> None:
    probes = [e for e in upstream.access_log(include_probes=True) if e.is_probe]
    assert probes, "start() polls /v2/ until ready"
    assert not [e for e in upstream.access_log() if e.is_probe]


# -- lifecycle, tags, large images, proxy mode -------------------------------------------
def test_a_restarted_upstream_keeps_its_port_and_storage(
    distribution_factory: Callable[..., Distribution], tmp_path: Path
) -> None:
    dist = distribution_factory("htpasswd")
    image = pusher_for(dist).small_image("restart/me", "v1")
    url = dist.url

    dist.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v2/", timeout=5)
    dist.start()

    assert dist.url == url
    skopeo_copy(image.ref, tmp_path, creds=dist.credentials)
    assert sha256(dir_manifest(tmp_path)) == image.digest


def test_retag_and_replace_tag_change_what_a_tag_points_to(
    upstream: Distribution, unique_repo: str
) -> None:
    pusher = pusher_for(upstream)
    first = pusher.small_image(unique_repo, "v1")

    assert pusher.retag(unique_repo, "v1", "stable") == first.digest
    second = pusher.replace_tag(unique_repo, "stable")

    assert second.digest != first.digest
    assert skopeo_inspect(f"{upstream.host_port}/{unique_repo}:stable")["Digest"] == second.digest
    assert skopeo_inspect(first.ref)["Digest"] == first.digest
    assert sorted(pusher.tags(unique_repo)) == ["stable", "v1"]


def test_a_large_image_is_pushed_in_chunks_and_pulls_back(
    distribution_factory: Callable[..., Distribution], image_cache_dir: Path, tmp_path: Path
) -> None:
    # A registry of its own: on the shared one, another test may have pushed the layer.
    upstream = distribution_factory()
    mark = upstream.mark()
    image = pusher_for(upstream, image_cache_dir).large_image("fixtures/large", size_mib=100)
    layer = image.manifests[0].layers[0].blob
    assert layer.size >= 100 * 1024 * 1024

    patches = [e for e in upstream.settled_requests_since(mark) if e.method == "PATCH"]
    assert len(patches) == -(-layer.size // (8 * 1024 * 1024))
    skopeo_copy(image.ref, tmp_path)
    assert_dir_copy_matches(tmp_path, image.manifests[0])


def test_distribution_in_proxy_mode_pulls_through_from_upstream(
    distribution_factory: Callable[..., Distribution],
    upstream: Distribution,
    small_image: PushedImage,
    tmp_path: Path,
) -> None:
    proxy = distribution_factory(proxy_remote_url=upstream.url)
    mark = upstream.mark()

    skopeo_copy(small_image.ref_on(proxy.host_port), tmp_path)

    assert sha256(dir_manifest(tmp_path)) == small_image.digest
    upstream_blob_gets = [e for e in upstream.settled_requests_since(mark) if "/blobs/" in e.path]
    assert len(upstream_blob_gets) >= len(small_image.blobs)


def test_pusher_works_against_a_private_token_server_with_anonymous_pull_only(
    distribution_factory: Callable[..., Distribution], tmp_path: Path
) -> None:
    dist = distribution_factory("token", username="alice", password="s3cret")
    assert dist.token_server is not None
    image = ImagePusher.for_registry(dist.url, credentials=("alice", "s3cret")).small_image(
        "private/img", "v1"
    )
    skopeo_copy(image.ref, tmp_path)
    assert sha256(dir_manifest(tmp_path)) == image.digest
    anonymous_push = ImagePusher.for_registry(dist.url)
    with pytest.raises(RegistryError) as refused:
        anonymous_push.small_image("private/img", "v2")
    assert refused.value.status == 401


def test_settling_the_access_log_gives_up_at_its_deadline(upstream: Distribution) -> None:
    mark = upstream.mark()
    with pytest.raises(TimeoutError, match="did not settle"):
        upstream.settled_requests_since(mark, min_count=1, deadline_s=0.3)


# -- documented Distribution 2.8 behaviour the registry under test must cope with --------
def test_distribution_hides_oci_manifests_from_clients_that_do_not_accept_them(
    upstream: Distribution, small_image: PushedImage, multi_platform_image: PushedImage
) -> None:
    for image in (small_image, multi_platform_image):
        url = f"{upstream.url}/v2/{image.name}/manifests/{image.tag}"
        assert requests.get(url, timeout=10).status_code == 404
        accepted = requests.get(url, headers={"Accept": image.media_type}, timeout=10)
        assert accepted.status_code == 200
        assert accepted.content == image.manifest_bytes


def test_distribution_downgrades_docker_manifests_for_clients_without_accept(
    upstream: Distribution, docker_list_image: PushedImage
) -> None:
    url = f"{upstream.url}/v2/{docker_list_image.name}/manifests/{docker_list_image.tag}"
    no_accept = requests.get(url, timeout=10)
    assert (
        no_accept.headers["Content-Type"]
        == "application/vnd.docker.distribution.manifest.v1+prettyjws"
    )
    only_v2 = requests.get(url, headers={"Accept": DOCKER_MANIFEST}, timeout=10)
    amd64 = docker_list_image.image.for_platform("amd64")  # type: ignore[union-attr]
    assert only_v2.headers["Docker-Content-Digest"] == amd64.digest
