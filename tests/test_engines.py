"""Real container engines pull through the registry configured as their mirror.

dockerd (``registry-mirrors``), containerd (``hosts.toml`` + ``ctr images pull --hosts-dir``),
podman (``registries.conf`` mirror) and skopeo pull images that exist only on a local CNCF
Distribution: the machine has no route to Docker Hub, so a successful pull proves the
registry served it. Each test gets a fresh registry; dockerd and containerd are started once
for the module. The registry's access log gives the exact requests each client sent.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.fixtures.distribution import AccessEntry, Distribution
from tests.fixtures.engine_images import (
    HOST_ARCH,
    OTHER_ARCH,
    manifest_chain_id,
    runnable_image,
    runnable_multi_platform,
)
from tests.fixtures.engines import (
    SKOPEO,
    ContainerdEngine,
    DockerEngine,
    Podman,
    RegistryLog,
    require_container_runtime,
    require_program,
    require_root,
    write_hosts_toml,
    write_registries_conf,
)
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.oci import BuiltIndex, BuiltManifest
from tests.fixtures.plugin import pusher_for
from tests.fixtures.skopeo import dir_manifest, skopeo_copy

HUB = "docker-io"
GHCR = "ghcr.io"
NGINX_TEXT = b"nginx 1.25.0, pulled through simple-registry\n"
MULTI_TEXT = b"a multi-platform image, pulled through simple-registry\n"
ALPINE_TEXT = b"alpine 3.19, pulled through simple-registry\n"
TOOL_TEXT = b"ghcr.io/org/tool 1.0, pulled through simple-registry\n"

WARM_PULL_ROUNDS = 10
_ids = itertools.count(1)

#: A registry bug these tests found (see the reason); the suite stays green until it is fixed.


# -- images on the upstreams ---------------------------------------------------------------
@dataclass(frozen=True)
class EngineImages:
    nginx: PushedImage  # library/nginx:1.25.0, Docker schema 2, single platform
    multi: PushedImage  # library/engine-multi:1.0, Docker manifest list (amd64 + arm64)
    alpine: PushedImage  # library/alpine:3.19, OCI index (amd64 + arm64)


@pytest.fixture(scope="module")
def engine_images(upstream: Distribution) -> EngineImages:
    pusher = pusher_for(upstream)
    try:
        return EngineImages(
            nginx=pusher.push("library/nginx", "1.25.0", runnable_image(NGINX_TEXT)),
            multi=pusher.push(
                "library/engine-multi", "1.0", runnable_multi_platform(MULTI_TEXT, flavor="docker")
            ),
            alpine=pusher.push(
                "library/alpine", "3.19", runnable_multi_platform(ALPINE_TEXT, flavor="oci")
            ),
        )
    finally:
        pusher.client.close()


def host_manifest(image: PushedImage) -> BuiltManifest:
    if isinstance(image.image, BuiltIndex):
        return image.image.for_platform(HOST_ARCH)
    return image.image


def pulled_digests(image: PushedImage, architecture: str = HOST_ARCH) -> set[str]:
    """Every object a single-platform pull of ``image`` needs (and the registry stores)."""
    if isinstance(image.image, BuiltIndex):
        chosen = image.image.for_platform(architecture)
        return {image.digest, chosen.digest, *(b.digest for b in chosen.blobs)}
    return {image.digest, *image.blob_digests}


def other_platform_digests(image: PushedImage) -> set[str]:
    assert isinstance(image.image, BuiltIndex)
    other = image.image.for_platform(OTHER_ARCH)
    return {other.digest, *(b.digest for b in other.blobs)} - pulled_digests(image)


# -- registries ----------------------------------------------------------------------------
def hub_repository(upstream: Distribution) -> dict[str, object]:
    return {
        "namespace": "docker.io",
        "immutable_tags": True,
        "upstream": [upstream_entry(upstream)],
    }


def hub_mirror(mirror_factory: MirrorFactory, upstream: Distribution, **more: object) -> Mirror:
    """Docker Hub's stand-in as `docker-io` (namespace docker.io, the default repository)."""
    return mirror_factory(
        {HUB: hub_repository(upstream), **more}, global_={"default_repository": HUB}
    )


def settle(mirror: Mirror, storage_name: str, tag: str, digests: set[str]) -> None:
    """Wait (polling, with a deadline) until the cacher stored the tag and its content."""
    mirror.wait_for_blobs(digests)
    mirror.wait_for_tag(storage_name, tag)


def api(requests: list[AccessEntry]) -> list[tuple[str, str]]:
    return [(r.method, r.target) for r in requests if r.is_api]


class Watch:
    """From its creation on: what clients sent the registry, and what the registry asked
    each upstream (both read once the registry is idle and the logs quiet)."""

    def __init__(self, mirror: Mirror, *upstreams: Distribution) -> None:
        self.log = RegistryLog(mirror)
        self.mark = self.log.mark()
        self.upstream_marks = [(upstream, upstream.mark()) for upstream in upstreams]

    def requests(self) -> list[AccessEntry]:
        return self.log.settled_since(self.mark)

    def sent(self) -> list[tuple[str, str]]:
        return api(self.requests())

    def upstream_saw(self, index: int = 0) -> set[tuple[str, str, int]]:
        upstream, mark = self.upstream_marks[index]
        return {(e.method, e.target, e.status) for e in upstream.settled_requests_since(mark)}


def blob_gets(name: str, manifest: BuiltManifest, query: str = "") -> list[tuple[str, str]]:
    suffix = f"?{query}" if query else ""
    return sorted(("GET", f"/v2/{name}/blobs/{b.digest}{suffix}") for b in manifest.blobs)


def upstream_pull(name: str, tag: str, image: PushedImage) -> set[tuple[str, str, int]]:
    """What the registry asks the upstream on a cold pull of one platform of ``image``."""
    expected = {("GET", f"/v2/{name}/manifests/{tag}", 200)}
    manifest = host_manifest(image)
    if isinstance(image.image, BuiltIndex):
        expected.add(("GET", f"/v2/{name}/manifests/{manifest.digest}", 200))
    expected |= {("GET", f"/v2/{name}/blobs/{b.digest}", 200) for b in manifest.blobs}
    return expected


# -- dockerd --------------------------------------------------------------------------------
E = TypeVar("E", DockerEngine, ContainerdEngine)


def running(engine_class: type[E], tmp_path_factory: pytest.TempPathFactory) -> Iterator[E]:
    """A daemon of this module, in a folder of its own, stopped after the module."""
    require_root()
    engine = engine_class(tmp_path_factory.mktemp(engine_class.name))
    try:
        yield engine.start()
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    yield from running(DockerEngine, tmp_path_factory)


@pytest.fixture
def docker_hub(
    dockerd: DockerEngine, mirror_factory: MirrorFactory, upstream: Distribution
) -> Iterator[tuple[DockerEngine, Mirror]]:
    """dockerd whose registry-mirrors is a fresh registry, with no image at the start."""
    mirror = hub_mirror(mirror_factory, upstream)
    dockerd.use_mirror(mirror)
    yield dockerd, mirror
    dockerd.remove_everything()


def test_docker_pull_of_an_unprefixed_name_comes_through_the_registry_mirror(
    docker_hub: tuple[DockerEngine, Mirror], upstream: Distribution, engine_images: EngineImages
) -> None:
    docker, mirror = docker_hub
    image = engine_images.nginx
    watch = Watch(mirror, upstream)

    docker.pull("nginx:1.25.0")

    pulled = docker.client.images.get("nginx:1.25.0")
    assert pulled.id == host_manifest(image).config.digest
    assert f"nginx@{image.digest}" in pulled.attrs["RepoDigests"]
    requests = watch.requests()
    sent = api(requests)
    assert sent[:3] == [
        ("GET", "/v2/"),
        ("HEAD", "/v2/library/nginx/manifests/1.25.0"),
        ("GET", f"/v2/library/nginx/manifests/{image.digest}"),
    ]
    assert sorted(sent[3:]) == blob_gets("library/nginx", host_manifest(image))
    assert {r.status for r in requests} == {200}
    settle(mirror, f"{HUB}/library/nginx", "1.25.0", pulled_digests(image))
    assert watch.upstream_saw() == upstream_pull("library/nginx", "1.25.0", image)
    assert mirror.stored_blobs() == pulled_digests(image)


def test_docker_pulls_the_host_platform_of_a_manifest_list_and_nothing_of_the_other(
    docker_hub: tuple[DockerEngine, Mirror], upstream: Distribution, engine_images: EngineImages
) -> None:
    docker, mirror = docker_hub
    image = engine_images.multi
    chosen = host_manifest(image)
    watch = Watch(mirror, upstream)

    docker.pull("engine-multi:1.0")

    pulled = docker.client.images.get("engine-multi:1.0")
    assert pulled.id == chosen.config.digest
    assert pulled.attrs["Architecture"] == HOST_ARCH
    assert f"engine-multi@{image.digest}" in pulled.attrs["RepoDigests"]
    sent = watch.sent()
    assert sent[:4] == [
        ("GET", "/v2/"),
        ("HEAD", "/v2/library/engine-multi/manifests/1.0"),
        ("GET", f"/v2/library/engine-multi/manifests/{image.digest}"),
        ("GET", f"/v2/library/engine-multi/manifests/{chosen.digest}"),
    ]
    assert sorted(sent[4:]) == blob_gets("library/engine-multi", chosen)
    settle(mirror, f"{HUB}/library/engine-multi", "1.0", pulled_digests(image))
    upstream_seen = watch.upstream_saw()
    assert upstream_seen == upstream_pull("library/engine-multi", "1.0", image)
    assert not any(
        d in target for _, target, _ in upstream_seen for d in other_platform_digests(image)
    )
    assert mirror.stored_blobs() == pulled_digests(image)


@pytest.mark.parametrize(
    ("reference", "text"),
    [("nginx:1.25.0", NGINX_TEXT), ("engine-multi:1.0", MULTI_TEXT)],
    ids=["schema-2-manifest", "manifest-list"],
)
def test_docker_run_of_an_image_pulled_through_the_mirror_prints_its_text(
    docker_hub: tuple[DockerEngine, Mirror],
    engine_images: EngineImages,
    reference: str,
    text: bytes,
) -> None:
    require_container_runtime()
    docker, _ = docker_hub
    docker.pull(reference)
    assert docker.run(reference) == text


def test_repeated_docker_pulls_of_an_immutable_tag_after_rmi_make_no_upstream_request(
    docker_hub: tuple[DockerEngine, Mirror], upstream: Distribution, engine_images: EngineImages
) -> None:
    """dockerd lists its Accept headers in a random order (a Go map) on every pull, so a
    single warm pull proves little: every one of several must stay local."""
    docker, mirror = docker_hub
    image = engine_images.nginx
    docker.pull("nginx:1.25.0")
    settle(mirror, f"{HUB}/library/nginx", "1.25.0", pulled_digests(image))
    for round_ in range(WARM_PULL_ROUNDS):
        docker.remove_image("nginx:1.25.0")
        assert docker.client.images.list(all=True) == []
        watch = Watch(mirror, upstream)

        docker.pull("nginx:1.25.0")

        assert docker.client.images.get("nginx:1.25.0").id == host_manifest(image).config.digest
        assert watch.upstream_saw() == set(), f"warm pull {round_}"
        sent = watch.sent()
        # What dockerd fetched again (it may keep a layer it still has) came from storage.
        fetched = [request for request in sent if "/blobs/" in request[1]]
        assert fetched, "dockerd fetched nothing: the image was not really removed"
        assert set(fetched) <= set(blob_gets("library/nginx", host_manifest(image)))


# -- containerd + ctr -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerdEngine]:
    yield from running(ContainerdEngine, tmp_path_factory)


@pytest.fixture
def ctr_namespace(containerd: ContainerdEngine) -> Iterator[str]:
    """A containerd namespace of this test alone (content is isolated per namespace)."""
    namespace = f"engines-test-{next(_ids)}"
    yield namespace
    containerd.clear(namespace)
    containerd.ctr("namespaces", "remove", namespace)


@pytest.fixture
def ghcr(distribution_factory: Callable[..., Distribution]) -> tuple[Distribution, PushedImage]:
    """A second upstream, standing in for ghcr.io, with org/tool:1.0 (an OCI index)."""
    dist = distribution_factory()
    pusher = pusher_for(dist)
    try:
        return dist, pusher.push("org/tool", "1.0", runnable_multi_platform(TOOL_TEXT))
    finally:
        pusher.client.close()


def containerd_mirror(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    ghcr_upstream: Distribution | None,
    hosts: Path,
) -> Mirror:
    more = {}
    if ghcr_upstream is not None:
        more[GHCR] = {
            "namespace": "ghcr.io",
            "immutable_tags": True,
            "upstream": [upstream_entry(ghcr_upstream)],
        }
    mirror = hub_mirror(mirror_factory, upstream, **more)
    write_hosts_toml(hosts, "docker.io", "https://registry-1.docker.io", mirror)
    write_hosts_toml(hosts, "ghcr.io", "https://ghcr.io", mirror)
    return mirror


@dataclass
class CtrHub:
    """containerd with a namespace of this test and a hosts.toml folder pointing docker.io
    and ghcr.io at a fresh registry."""

    containerd: ContainerdEngine
    namespace: str
    hosts: Path
    mirror: Mirror

    def pull(self, reference: str) -> str:
        return self.containerd.pull(reference, self.hosts, self.namespace)


@pytest.fixture
def ctr_hub(
    containerd: ContainerdEngine,
    ctr_namespace: str,
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    tmp_path: Path,
) -> CtrHub:
    hosts = tmp_path / "certs.d"
    mirror = containerd_mirror(mirror_factory, upstream, None, hosts)
    return CtrHub(containerd, ctr_namespace, hosts, mirror)


def test_ctr_pulls_a_docker_io_name_through_hosts_toml_with_the_ns_query_and_unpacks_it(
    ctr_hub: CtrHub, upstream: Distribution, engine_images: EngineImages
) -> None:
    image = engine_images.nginx
    containerd, namespace = ctr_hub.containerd, ctr_hub.namespace
    watch = Watch(ctr_hub.mirror, upstream)

    ctr_hub.pull("docker.io/library/nginx:1.25.0")

    assert containerd.images(namespace) == {"docker.io/library/nginx:1.25.0": image.digest}
    assert manifest_chain_id(host_manifest(image)) in containerd.snapshots(namespace)
    requests = watch.requests()
    sent = api(requests)
    # No /v2/ ping: containerd goes straight to the manifest, telling the registry the
    # namespace (the registry it means) in ?ns=.
    assert sent[:2] == [
        ("HEAD", "/v2/library/nginx/manifests/1.25.0?ns=docker.io"),
        ("GET", f"/v2/library/nginx/manifests/{image.digest}?ns=docker.io"),
    ]
    assert sorted(sent[2:]) == blob_gets("library/nginx", host_manifest(image), "ns=docker.io")
    assert {r.status for r in requests} == {200}
    settle(ctr_hub.mirror, f"{HUB}/library/nginx", "1.25.0", pulled_digests(image))
    assert watch.upstream_saw() == upstream_pull("library/nginx", "1.25.0", image)


def test_ctr_runs_the_image_it_pulled_through_the_mirror(
    ctr_hub: CtrHub, engine_images: EngineImages
) -> None:
    require_container_runtime()
    ctr_hub.pull("docker.io/library/alpine:3.19")
    output = ctr_hub.containerd.run(
        "docker.io/library/alpine:3.19", f"run-{next(_ids)}", ctr_hub.namespace
    )
    assert output.encode() == ALPINE_TEXT


def test_a_second_ctr_pull_of_an_immutable_tag_makes_no_upstream_request(
    ctr_hub: CtrHub, upstream: Distribution, engine_images: EngineImages
) -> None:
    image = engine_images.nginx
    reference = "docker.io/library/nginx:1.25.0"
    containerd, namespace = ctr_hub.containerd, ctr_hub.namespace
    ctr_hub.pull(reference)
    settle(ctr_hub.mirror, f"{HUB}/library/nginx", "1.25.0", pulled_digests(image))
    containerd.remove_image(reference, namespace)
    assert containerd.content(namespace) == set()
    watch = Watch(ctr_hub.mirror, upstream)

    ctr_hub.pull(reference)

    assert containerd.images(namespace) == {reference: image.digest}
    assert watch.upstream_saw() == set()
    sent = watch.sent()
    assert sorted(sent[2:]) == blob_gets("library/nginx", host_manifest(image), "ns=docker.io")


def test_ctr_pulls_a_ghcr_io_name_through_the_same_registry_and_its_second_pull_stays_local(
    containerd: ContainerdEngine,
    ctr_namespace: str,
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    ghcr: tuple[Distribution, PushedImage],
    tmp_path: Path,
) -> None:
    ghcr_upstream, image = ghcr
    chosen = host_manifest(image)
    reference = "ghcr.io/org/tool:1.0"
    mirror = containerd_mirror(mirror_factory, upstream, ghcr_upstream, tmp_path / "certs.d")
    watch = Watch(mirror, ghcr_upstream, upstream)

    containerd.pull(reference, tmp_path / "certs.d", ctr_namespace)

    assert containerd.images(ctr_namespace) == {reference: image.digest}
    assert manifest_chain_id(chosen) in containerd.snapshots(ctr_namespace)
    sent = watch.sent()
    assert sent[:3] == [
        ("HEAD", "/v2/org/tool/manifests/1.0?ns=ghcr.io"),
        ("GET", f"/v2/org/tool/manifests/{image.digest}?ns=ghcr.io"),
        ("GET", f"/v2/org/tool/manifests/{chosen.digest}?ns=ghcr.io"),
    ]
    assert sorted(sent[3:]) == blob_gets("org/tool", chosen, "ns=ghcr.io")
    settle(mirror, f"{GHCR}/org/tool", "1.0", pulled_digests(image))
    assert watch.upstream_saw() == upstream_pull("org/tool", "1.0", image)
    assert watch.upstream_saw(1) == set()

    containerd.remove_image(reference, ctr_namespace)
    assert containerd.content(ctr_namespace) == set()
    watch = Watch(mirror, ghcr_upstream)
    containerd.pull(reference, tmp_path / "certs.d", ctr_namespace)
    assert containerd.images(ctr_namespace) == {reference: image.digest}
    assert watch.upstream_saw() == set()
    assert sorted(watch.sent()[3:]) == blob_gets("org/tool", chosen, "ns=ghcr.io")


# -- podman ---------------------------------------------------------------------------------
@pytest.fixture
def podman_hub(
    mirror_factory: MirrorFactory, upstream: Distribution, tmp_path: Path
) -> Iterator[tuple[Podman, Mirror]]:
    """podman whose registries.conf mirrors docker.io to a fresh registry."""
    require_root()
    mirror = hub_mirror(mirror_factory, upstream)
    podman = Podman(tmp_path / "podman", mirror)
    try:
        yield podman, mirror
    finally:
        podman.stop()


def podman_digest(podman: Podman, reference: str) -> str:
    return podman("image", "inspect", "--format", "{{.Digest}}", reference).stdout.strip()


def test_podman_pulls_a_docker_io_name_through_its_registries_conf_mirror(
    podman_hub: tuple[Podman, Mirror], upstream: Distribution, engine_images: EngineImages
) -> None:
    podman, mirror = podman_hub
    image = engine_images.alpine
    chosen = host_manifest(image)
    watch = Watch(mirror, upstream)

    podman("pull", "docker.io/library/alpine:3.19")

    assert podman_digest(podman, "docker.io/library/alpine:3.19") == image.digest
    requests = watch.requests()
    sent = api(requests)
    # No HEAD: podman GETs the tag, then the platform's manifest by digest.
    assert sent[:3] == [
        ("GET", "/v2/"),
        ("GET", "/v2/library/alpine/manifests/3.19"),
        ("GET", f"/v2/library/alpine/manifests/{chosen.digest}"),
    ]
    assert sorted(sent[3:]) == blob_gets("library/alpine", chosen)
    assert {r.status for r in requests if r.is_api} == {200}
    settle(mirror, f"{HUB}/library/alpine", "3.19", pulled_digests(image))
    assert watch.upstream_saw() == upstream_pull("library/alpine", "3.19", image)


def test_podman_runs_the_image_it_pulled_through_the_mirror(
    podman_hub: tuple[Podman, Mirror], engine_images: EngineImages
) -> None:
    require_container_runtime()
    podman, _ = podman_hub
    podman("pull", "docker.io/library/alpine:3.19")
    output = podman("run", "--rm", "--pull=never", "docker.io/library/alpine:3.19").stdout
    assert output.encode() == ALPINE_TEXT


def test_a_second_podman_pull_after_rmi_makes_no_upstream_request(
    podman_hub: tuple[Podman, Mirror], upstream: Distribution, engine_images: EngineImages
) -> None:
    podman, mirror = podman_hub
    image = engine_images.alpine
    podman("pull", "docker.io/library/alpine:3.19")
    settle(mirror, f"{HUB}/library/alpine", "3.19", pulled_digests(image))
    podman("rmi", "docker.io/library/alpine:3.19")
    watch = Watch(mirror, upstream)

    podman("pull", "docker.io/library/alpine:3.19")

    assert podman_digest(podman, "docker.io/library/alpine:3.19") == image.digest
    assert watch.upstream_saw() == set()
    assert sorted(watch.sent()[3:]) == blob_gets("library/alpine", host_manifest(image))


# -- skopeo ---------------------------------------------------------------------------------
def test_skopeo_override_arch_copies_the_other_platform_through_the_docker_io_prefix(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    engine_images: EngineImages,
    tmp_path: Path,
) -> None:
    image = engine_images.alpine
    other = image.image.for_platform(OTHER_ARCH)  # type: ignore[union-attr]
    mirror = hub_mirror(mirror_factory, upstream)
    watch = Watch(mirror)

    skopeo_copy(
        f"{mirror.host_port}/{HUB}/library/alpine:3.19", tmp_path / "out", override_arch=OTHER_ARCH
    )

    assert dir_manifest(tmp_path / "out") == other.raw
    sent = watch.sent()
    assert sent[:3] == [
        ("GET", "/v2/"),
        ("GET", f"/v2/{HUB}/library/alpine/manifests/3.19"),
        ("GET", f"/v2/{HUB}/library/alpine/manifests/{other.digest}"),
    ]
    assert sorted(sent[3:]) == blob_gets(f"{HUB}/library/alpine", other)
    mirror.wait_for_blobs(pulled_digests(image, OTHER_ARCH))


def test_skopeo_override_arch_pulls_a_docker_io_name_through_a_registries_conf_mirror(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    engine_images: EngineImages,
    tmp_path: Path,
) -> None:
    require_program(SKOPEO)
    image = engine_images.alpine
    other = image.image.for_platform(OTHER_ARCH)  # type: ignore[union-attr]
    mirror = hub_mirror(mirror_factory, upstream)
    conf = write_registries_conf(tmp_path / "registries.conf", mirror)
    watch = Watch(mirror)
    (tmp_path / "out").mkdir()

    result = subprocess.run(
        [
            SKOPEO,
            "--insecure-policy",
            "--override-arch",
            OTHER_ARCH,
            "copy",
            "--retry-times",
            "0",
            "--src-no-creds",
            "--preserve-digests",
            "--registries-conf",
            str(conf),
            "docker://docker.io/library/alpine:3.19",
            f"dir:{tmp_path / 'out'}",
        ],
        env={
            "HOME": str(tmp_path),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert dir_manifest(tmp_path / "out") == other.raw
    sent = watch.sent()
    assert sent[:3] == [
        ("GET", "/v2/"),
        ("GET", "/v2/library/alpine/manifests/3.19"),
        ("GET", f"/v2/library/alpine/manifests/{other.digest}"),
    ]
    assert sorted(sent[3:]) == blob_gets("library/alpine", other)
    mirror.wait_for_blobs(pulled_digests(image, OTHER_ARCH))
