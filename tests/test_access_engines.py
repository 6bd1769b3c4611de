"""Container engines against a registry that serves TLS and wants a login: podman, dockerd
and containerd trust the test CA, log in (or pass `--user`), and pull; a wrong password
is refused."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.access import cert_dir
from tests.fixtures.distribution import Distribution
from tests.fixtures.engines import (
    ContainerdEngine,
    DockerEngine,
    EngineError,
    Podman,
    require_root,
)
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory
from tests.fixtures.tls import TestPki
from tests.test_access_control import PASSWORDS, READ_HEALTH, REPO, start_secure

RULES = [READ_HEALTH, "identity.username == 'alice'"]


@pytest.fixture
def locked_registry(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki
) -> Mirror:
    require_root()
    return start_secure(mirror_factory, upstream, test_pki, users=PASSWORDS, rules=RULES)


def test_podman_logs_in_and_pulls_over_tls_with_its_cert_dir(
    locked_registry: Mirror, test_pki: TestPki, small_image: PushedImage, tmp_path: Path
) -> None:
    mirror = locked_registry
    podman = Podman(tmp_path / "podman", mirror)
    certs = cert_dir(tmp_path / "certs", test_pki)
    auth = tmp_path / "auth.json"
    try:
        with pytest.raises(EngineError):
            podman("login", "--cert-dir", str(certs), "--authfile", str(auth),
                   "-u", "alice", "-p", "not-the-password", mirror.host_port)  # fmt: skip
        podman("login", "--cert-dir", str(certs), "--authfile", str(auth),
               "-u", "alice", "-p", PASSWORDS["alice"], mirror.host_port)  # fmt: skip
        reference = f"{mirror.host_port}/{REPO}/fixtures/small:latest"
        podman("pull", "--cert-dir", str(certs), "--authfile", str(auth), reference)
        digest = podman("image", "inspect", "--format", "{{.Digest}}", reference).stdout.strip()
        assert digest == small_image.digest
    finally:
        podman.stop()


@pytest.fixture
def dockerd_trusting(locked_registry: Mirror, test_pki: TestPki) -> Iterator[DockerEngine]:
    # dockerd reads a registry's CA from /etc/docker/certs.d/<host:port>/ca.crt only.
    certs = Path("/etc/docker/certs.d") / locked_registry.host_port
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "ca.crt").write_bytes(test_pki.ca_path.read_bytes())
    # A short root: dockerd's containerd sockets live under it (104-byte socket paths).
    root = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))
    engine = DockerEngine(root)
    try:
        yield engine.start()
    finally:
        engine.stop()
        shutil.rmtree(certs, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_docker_logs_in_and_pulls_over_tls_trusting_the_test_ca(
    locked_registry: Mirror, dockerd_trusting: DockerEngine, small_image: PushedImage
) -> None:
    import docker

    client = dockerd_trusting.client
    registry = locked_registry.host_port
    with pytest.raises(docker.errors.APIError):
        client.login(username="alice", password="not-the-password", registry=registry)
    client.login(username="alice", password=PASSWORDS["alice"], registry=registry)
    image = client.images.pull(f"{registry}/{REPO}/fixtures/small", tag="latest")
    assert f"{registry}/{REPO}/fixtures/small@{small_image.digest}" in image.attrs["RepoDigests"]
    with pytest.raises(docker.errors.APIError):
        client.images.pull(
            f"{registry}/{REPO}/fixtures/small",
            tag="latest",
            auth_config={"username": "bob", "password": PASSWORDS["bob"]},
        )


@pytest.fixture
def containerd() -> Iterator[ContainerdEngine]:
    require_root()
    root = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    engine = ContainerdEngine(root)
    try:
        yield engine.start()
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_containerd_pulls_over_tls_with_a_hosts_toml_ca_and_user(
    locked_registry: Mirror,
    containerd: ContainerdEngine,
    test_pki: TestPki,
    small_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = locked_registry
    hosts = tmp_path / "certs.d"
    path = hosts / mirror.host_port / "hosts.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        f"server = {json.dumps(mirror.url)}\n\n"
        f"[host.{json.dumps(mirror.url)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
        f"  ca = {json.dumps(str(test_pki.ca_path))}\n"
    )
    reference = f"{mirror.host_port}/{REPO}/fixtures/small:latest"
    common = ["images", "pull", "--snapshotter", "native", "--hosts-dir", str(hosts)]
    with pytest.raises(EngineError):
        containerd.ctr(*common, "--user", "alice:not-the-password", reference, namespace="tls")
    containerd.ctr(*common, "--user", f"alice:{PASSWORDS['alice']}", reference, namespace="tls")
    assert containerd.images("tls")[reference] == small_image.digest
    containerd.clear("tls")
