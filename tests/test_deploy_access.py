"""Deployments with access control: the split compose stack and Kubernetes serve TLS with
certificates and identities from secrets, their probes and haproxy's health checks pass a
deny-by-default policy, Prometheus gets /metrics as an identity, and the shipped EXAMPLE
certificate is what deploy/make-example-certs.sh makes and is named at start-up.

The wiring is read from what the tools render (`docker compose config`, `kubectl
kustomize`); the behaviour is a real registry process with the shipped policy and the
EXAMPLE certificate, behind a real haproxy running the shipped haproxy.cfg.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import socket
import ssl
import subprocess
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from simple_registry.common.config import Settings, load_settings
from simple_registry.common.config.summary import EXAMPLE_CERTIFICATES

from tests.fixtures.access import argon2_hash
from tests.fixtures.distribution import Distribution
from tests.fixtures.haproxy import Haproxy
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import REGISTRY_COMMAND, MirrorFactory, upstream_entry
from tests.fixtures.ports import free_port, poll_until
from tests.fixtures.tls import TestPki
from tests.test_access_control import basic
from tests.test_deploy import (
    COMPOSE_DIR,
    DEPLOY,
    FS_COMPOSE,
    K8S,
    SPLIT_COMPOSE,
    command_configs,
    compose_config,
    one,
    run,
    tool,
)

SCRIPT = DEPLOY / "make-example-certs.sh"
EXAMPLE_SETS = {
    "compose": COMPOSE_DIR / "secrets",
    "k8s": K8S,
}
EXAMPLE_FILES = ("ca.example.crt", "tls.example.crt", "tls.example.key")
ACCESS_FILES = {
    "compose": COMPOSE_DIR / "secrets" / "registry-access.example.toml",
    "k8s": K8S / "access.example.toml",
}
NODE_RULE = (
    "'registry-nodes' in identity.certificate.organizations && "
    "request.action in ['get-api-version', 'get-manifest', 'get-blob']"
)


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names_of(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def verifies(ca: Path, pair: tuple[Path, Path], server_name: str) -> bool:
    """A TLS handshake (in memory) with this pair, the client checking it against `ca` for
    `server_name` as Python's default context does."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*pair)
    client_context = ssl.create_default_context(cafile=str(ca))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_out, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(to_server, server_out, server_side=True)
    client = client_context.wrap_bio(to_client, client_out, server_hostname=server_name)
    done: set[str] = set()
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if name in done:
                continue
            try:
                side.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError:
                return False
        to_server.write(client_out.read())
        to_client.write(server_out.read())
        if len(done) == 2:
            return True
    return False


def shipped_policy(path: Path) -> dict[str, Any]:
    policy: dict[str, Any] = tomllib.loads(path.read_text())["global"]["access_policy"]
    return policy


def check_config(*configs: Path) -> subprocess.CompletedProcess[str]:
    args = [*REGISTRY_COMMAND]
    for config in configs:
        args += ["-c", str(config)]
    return subprocess.run(
        [*args, "check-config"], capture_output=True, text=True, timeout=60, check=False
    )


# --------------------------------------------------------------------------- certificates


def test_the_example_certificate_is_shipped_once_for_compose_and_kubernetes_and_marked_example() -> (
    None
):
    compose, k8s = (EXAMPLE_SETS["compose"], EXAMPLE_SETS["k8s"])
    for name in EXAMPLE_FILES:
        assert (compose / name).read_bytes() == (k8s / name).read_bytes(), name
        # Text before the PEM block, for whoever opens the file.
        assert (compose / name).read_text().startswith("EXAMPLE "), name
    cert = certificate(compose / "tls.example.crt")
    ca = certificate(compose / "ca.example.crt")
    for subject in (cert.subject, ca.subject):
        organizations = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        assert organizations and "EXAMPLE" in str(organizations[0].value)
    assert cert.issuer == ca.subject
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert remaining > datetime.timedelta(days=365), "regenerate: make-example-certs.sh --example"
    pair = (compose / "tls.example.crt", compose / "tls.example.key")
    assert verifies(compose / "ca.example.crt", pair, "registry.internal")
    assert not verifies(compose / "ca.example.crt", pair, "elsewhere.example.com")


def test_the_example_certificate_names_the_addresses_clients_use_in_compose_and_kubernetes(
    rendered: list[dict[str, Any]],
) -> None:
    names = names_of(certificate(K8S / "tls.example.crt"))
    service = client_service(rendered)
    namespace = service["metadata"]["namespace"]
    short = service["metadata"]["name"]
    for name in (
        short,
        f"{short}.{namespace}",
        f"{short}.{namespace}.svc",
        f"{short}.{namespace}.svc.cluster.local",
        "frontend",  # the compose service haproxy and the other containers reach
        "localhost",
        "127.0.0.1",  # the compose stack's published port, on the host
        "registry.internal",  # deploy/README.md's name for the load balancer
    ):
        assert name in names, name


def test_the_start_up_warning_knows_the_fingerprint_of_the_shipped_example_certificate() -> None:
    der = ssl.PEM_cert_to_DER_cert(
        re.search(
            r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
            (K8S / "tls.example.crt").read_text(),
            re.S,
        ).group(0)  # type: ignore[union-attr]
    )
    assert hashlib.sha256(der).hexdigest() in EXAMPLE_CERTIFICATES, (
        "the example certificate was regenerated: put the fingerprint that "
        "make-example-certs.sh --example printed into summary.EXAMPLE_CERTIFICATES"
    )


def test_the_certificate_script_makes_an_operators_own_ca_and_server_certificate_for_the_names_given(
    tmp_path: Path,
) -> None:
    out = tmp_path / "tls"
    result = run("/bin/sh", str(SCRIPT), str(out), "registry.corp.example", "10.20.30.40")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert (out / "ca.key").stat().st_mode & 0o077 == 0
    assert (out / "tls.key").stat().st_mode & 0o077 == 0
    cert = certificate(out / "tls.crt")
    assert names_of(cert) == {"registry.corp.example", "10.20.30.40"}
    assert str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value) == (
        "registry.corp.example"
    )
    assert not cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    basic_constraints = certificate(out / "ca.crt").extensions.get_extension_for_class(
        x509.BasicConstraints
    )
    assert basic_constraints.value.ca is True
    pair = (out / "tls.crt", out / "tls.key")
    assert verifies(out / "ca.crt", pair, "registry.corp.example")
    assert not verifies(EXAMPLE_SETS["compose"] / "ca.example.crt", pair, "registry.corp.example")
    # Its own certificate is not the example: no warning for it (next test).
    assert hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest() not in EXAMPLE_CERTIFICATES


def test_check_config_warns_while_the_example_certificate_is_served_and_not_with_its_own(
    tmp_path: Path,
) -> None:
    own = tmp_path / "own"
    assert run("/bin/sh", str(SCRIPT), str(own), "registry.internal").returncode == 0
    base = {
        "global": {"access_policy": {"default": "allow"}},
        "blob_store": {"fs": {"root_dir": str(tmp_path / "data")}},
    }
    outputs = {}
    for label, folder, stem in (
        ("example", EXAMPLE_SETS["k8s"], "tls.example"),
        ("own", own, "tls"),
    ):
        config = tmp_path / f"{label}.toml"
        tls = {
            "server_certificate_bundle": str(folder / f"{stem}.crt"),
            "server_private_key": str(folder / f"{stem}.key"),
        }
        config.write_text(tomli_w.dumps({**base, "server": {"tls": tls}}))
        result = check_config(config)
        assert result.returncode == 0, result.stderr
        outputs[label] = result.stdout + result.stderr
    warning = re.compile(r"WARNING .*server_certificate_bundle .* is the EXAMPLE certificate")
    assert warning.search(outputs["example"]), outputs["example"]
    assert "EXAMPLE" not in outputs["own"], outputs["own"]
    assert "listener https://" in outputs["own"]


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def split() -> dict[str, Any]:
    return compose_config(SPLIT_COMPOSE)


def test_split_frontends_alone_get_the_certificate_and_the_identities_where_server_tls_names_them(
    split: dict[str, Any], tmp_path: Path
) -> None:
    services, secrets = split["services"], split["secrets"]
    frontend, cacher = services["frontend"], services["cacher"]
    mounted = {s["target"]: s["source"] for s in frontend["secrets"]}
    configs = command_configs(frontend["command"])
    assert configs[-1] == "/run/secrets/registry-access.toml"
    access_file = Path(secrets[mounted["registry-access.toml"]]["file"])
    assert access_file == ACCESS_FILES["compose"]
    tls = tomllib.loads(access_file.read_text())["server"]["tls"]
    served = {}
    for key in ("server_certificate_bundle", "server_private_key"):
        path = Path(tls[key])
        assert path.parent == Path("/run/secrets"), key
        served[key] = Path(secrets[mounted[path.name]]["file"])
    assert served["server_certificate_bundle"] == COMPOSE_DIR / "secrets" / "tls.example.crt"
    assert served["server_private_key"] == COMPOSE_DIR / "secrets" / "tls.example.key"
    # The cachers serve no clients: no key, no identities, no third config file.
    assert {s["source"] for s in cacher["secrets"]} == {"registry-credentials"}
    assert len(command_configs(cacher["command"])) == 2
    # What the frontend loads, with the secrets where compose puts them.
    text = access_file.read_text()
    for key, host_file in served.items():
        text = text.replace(tls[key], str(host_file))
    local_access = tmp_path / "access.toml"
    local_access.write_text(text)
    settings = load_settings(
        [
            COMPOSE_DIR / "config.toml",
            Path(secrets["registry-credentials"]["file"]),
            local_access,
        ]
    )
    assert settings.unknown_keys == () and settings.ignored_keys == ()
    assert settings.server.tls is not None
    assert {i.id for i in settings.auth.identities} == {"puller", "prometheus"}
    assert settings.global_.access_policy.default_allow is False


def test_split_healthchecks_speak_https_to_the_frontends_and_http_to_the_cachers_status_port(
    split: dict[str, Any],
) -> None:
    frontend = split["services"]["frontend"]
    cacher = split["services"]["cacher"]
    assert frontend["environment"]["SIMPLE_REGISTRY_HEALTHCHECK_URL"].startswith("https://")
    assert cacher["environment"]["SIMPLE_REGISTRY_HEALTHCHECK_URL"].startswith("http://")
    # Not verified: the certificate names the clients' address, not 127.0.0.1.
    assert "_create_unverified_context()" in frontend["healthcheck"]["test"][-1]


def test_the_laptop_compose_file_stays_plain_http() -> None:
    fs = compose_config(FS_COMPOSE)
    registry = fs["services"]["registry"]
    assert registry["environment"]["SIMPLE_REGISTRY_HEALTHCHECK_URL"].startswith("http://")
    settings = load_settings([COMPOSE_DIR / "config.fs.toml"])
    assert settings.server.tls is None


def test_haproxy_passes_tcp_through_and_checks_readyz_over_tls() -> None:
    text = (COMPOSE_DIR / "haproxy.cfg").read_text()
    defaults = re.search(r"^defaults\n(.*?)(?=^\S)", text, re.M | re.S)
    assert defaults and re.search(r"^\s*mode\s+tcp\s*$", defaults.group(1), re.M)
    backend = re.search(r"^backend frontends\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    assert backend is not None
    assert not re.search(r"^\s*mode\s+http", backend.group(1), re.M)
    server_line = re.search(r"^\s*default-server\s+(.*)$", backend.group(1), re.M)
    assert server_line is not None
    options = server_line.group(1).split()
    assert "check-ssl" in options and options[options.index("verify") + 1] == "none"
    assert " ssl " not in f" {server_line.group(1)} "  # passthrough: no TLS of its own


# --------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    import yaml

    result = run(tool("kubectl"), "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def client_service(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """The Service clients reach the registry through (the LoadBalancer)."""
    services = [
        d for d in rendered if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"
    ]
    assert len(services) == 1
    return services[0]


def pod_of(rendered: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(rendered, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def test_k8s_frontends_mount_the_tls_secret_where_their_access_file_points(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    tls_secret = one(rendered, "Secret", "simple-registry-tls")
    access_secret = one(rendered, "Secret", "simple-registry-access")
    assert tls_secret["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key"} <= set(tls_secret["data"])
    assert base64.b64decode(tls_secret["data"]["tls.crt"]) == (K8S / "tls.example.crt").read_bytes()
    access_text = base64.b64decode(access_secret["data"]["access.toml"]).decode()
    tls = tomllib.loads(access_text)["server"]["tls"]

    pod = pod_of(rendered, "simple-registry-frontend")
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files: dict[str, bytes] = {}
    for key in ("server_certificate_bundle", "server_private_key"):
        path = tls[key]
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        secret_name = volumes[mount["name"]]["secret"]["secretName"]
        assert secret_name == tls_secret["metadata"]["name"], key
        files[path] = base64.b64decode(tls_secret["data"][path[len(mount["mountPath"]) + 1 :]])
    # The cachers mount neither the certificate nor the identities.
    cacher = pod_of(rendered, "simple-registry-cacher")
    cacher_secrets = {v["secret"]["secretName"] for v in cacher["volumes"] if "secret" in v}
    assert cacher_secrets == {
        one(rendered, "Secret", "simple-registry-credentials")["metadata"]["name"]
    }

    # The frontend's view loads: config + credentials + access, the TLS files in place.
    for path, data in files.items():
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        access_text = access_text.replace(f'"{path}"', f'"{local}"')
    config = one(rendered, "ConfigMap", "simple-registry-config")["data"]["config.toml"]
    credentials = one(rendered, "Secret", "simple-registry-credentials")["data"]["credentials.toml"]
    (tmp_path / "config.toml").write_text(config)
    (tmp_path / "credentials.toml").write_bytes(base64.b64decode(credentials))
    (tmp_path / "access.toml").write_text(access_text)
    settings: Settings = load_settings(
        [tmp_path / "config.toml", tmp_path / "credentials.toml", tmp_path / "access.toml"]
    )
    assert settings.unknown_keys == () and settings.ignored_keys == ()
    assert settings.server.tls is not None
    assert {i.id for i in settings.auth.identities} == {"puller", "prometheus"}


def test_k8s_frontend_probes_speak_https_and_prometheus_is_told_to_scrape_https(
    rendered: list[dict[str, Any]],
) -> None:
    frontend = one(rendered, "Deployment", "simple-registry-frontend")
    container = frontend["spec"]["template"]["spec"]["containers"][0]
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[kind]["httpGet"]["scheme"] == "HTTPS", kind
    annotations = frontend["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    cacher = pod_of(rendered, "simple-registry-cacher")["containers"][0]
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert cacher[kind]["httpGet"].get("scheme", "HTTP") == "HTTP", kind
    service = client_service(rendered)
    assert [p["protocol"] for p in service["spec"]["ports"]] == ["TCP"]


def test_compose_and_k8s_ship_the_same_deny_by_default_policy_and_identities() -> None:
    compose = shipped_policy(COMPOSE_DIR / "config.toml")
    k8s = shipped_policy(K8S / "config.toml")
    assert compose == k8s
    assert compose["default"] == "deny"
    assert "request.action in ['healthz', 'readyz']" in compose["rules"]
    identities = [tomllib.loads(p.read_text())["auth"]["identity"] for p in ACCESS_FILES.values()]
    assert identities[0] == identities[1]
    assert set(identities[0]) == {"puller", "prometheus"}


# --------------------------------------------------------------------------- behaviour


def example_registry(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    passwords: dict[str, str],
    *,
    extra_rules: tuple[str, ...] = (),
    client_ca: Path | None = None,
) -> Any:
    """A registry with the shipped policy, the shipped identities (their passwords replaced,
    as an operator does) and the EXAMPLE certificate."""
    policy = shipped_policy(K8S / "config.toml")
    policy["rules"] = [*policy["rules"], *extra_rules]
    identities = tomllib.loads(ACCESS_FILES["k8s"].read_text())["auth"]["identity"]
    for identity_id, password in passwords.items():
        identities[identity_id]["password"] = argon2_hash(password)
    tls = {
        "server_certificate_bundle": str(K8S / "tls.example.crt"),
        "server_private_key": str(K8S / "tls.example.key"),
    }
    if client_ca is not None:
        tls["client_ca_bundle"] = str(client_ca)
    return mirror_factory(
        {"docker-io": {"upstream": [upstream_entry(upstream)]}},
        global_={"access_policy": policy},
        extra={"server": {"tls": tls}, "auth": {"identity": identities}},
    )


PASSWORDS = {"puller": "puller-test-password", "prometheus": "prometheus-test-password"}


def unverified_get(url: str) -> requests.Response:
    """How the kubelet and the compose healthcheck ask: HTTPS, the certificate unchecked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return requests.get(url, verify=False, timeout=30)


def test_the_shipped_policy_lets_probes_in_asks_others_to_log_in_and_keeps_prometheus_to_metrics(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = example_registry(mirror_factory, upstream, PASSWORDS)
    ca = str(K8S / "ca.example.crt")
    url = mirror.url
    assert url.startswith("https://")
    for path in ("/healthz", "/readyz"):
        assert unverified_get(f"{url}{path}").status_code == 200, path
        assert requests.get(f"{url}{path}", verify=ca, timeout=30).status_code == 200, path

    anonymous = requests.get(f"{url}/v2/", verify=ca, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(f"{url}/metrics", verify=ca, timeout=30).status_code == 401

    puller = basic("puller", PASSWORDS["puller"])
    assert requests.get(f"{url}/v2/", headers=puller, verify=ca, timeout=30).status_code == 200
    manifest = requests.get(
        f"{url}/v2/docker-io/fixtures/small/manifests/latest",
        headers={**puller, "Accept": small_image.media_type},
        verify=ca,
        timeout=30,
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == small_image.digest
    assert requests.get(f"{url}/metrics", headers=puller, verify=ca, timeout=30).status_code == 403
    wrong = basic("puller", "not-the-password")
    assert requests.get(f"{url}/v2/", headers=wrong, verify=ca, timeout=30).status_code == 401

    prometheus = basic("prometheus", PASSWORDS["prometheus"])
    scraped = requests.get(f"{url}/metrics", headers=prometheus, verify=ca, timeout=30)
    assert scraped.status_code == 200
    assert "registry_access_decisions_total" in scraped.text
    denied = requests.get(
        f"{url}/v2/docker-io/fixtures/small/manifests/latest",
        headers=prometheus,
        verify=ca,
        timeout=30,
    )
    assert denied.status_code == 403
    mirror.wait_for_log("is the EXAMPLE certificate shipped with simple-registry")


class ShippedHaproxy(Haproxy):
    """haproxy with deploy/compose/haproxy.cfg, its addresses moved to loopback: the listen
    ports, one frontend replica instead of Docker's DNS, and a stats socket to read the
    health checks' verdict."""

    def __init__(self, workdir: Path, backend: str, *, check_ssl: bool = True):
        super().__init__(workdir, [backend])
        self.check_ssl = check_ssl
        self.monitor_port = free_port()
        self.socket_path = workdir / "haproxy.sock"

    @property
    def url(self) -> str:
        return f"https://{self.host_port}"

    def config(self) -> str:
        text = (COMPOSE_DIR / "haproxy.cfg").read_text()
        replacements = {
            r"^([ \t]*)bind :5000[ \t]*$": rf"\1bind 127.0.0.1:{self.port}",
            r"^([ \t]*)bind :8404[ \t]*$": rf"\1bind 127.0.0.1:{self.monitor_port}",
            r"^([ \t]*)server-template frontend 8 frontend:8000[ \t]*$": rf"\1server frontend1 {self.backends[0]}",
            r"^global[ \t]*$": f"global\n    stats socket {self.socket_path} mode 600 level admin",
        }
        if not self.check_ssl:
            replacements[r" check-ssl verify none"] = ""
        for pattern, replacement in replacements.items():
            text, count = re.subn(pattern, replacement, text, flags=re.M)
            assert count == 1, pattern
        return text

    def _spawn_and_wait(self, port: int) -> None:
        self.socket_path.unlink(missing_ok=True)
        self.config_path.write_text(self.config())
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [tool("haproxy"), "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poll_until(
            self.socket_path.exists, 15.0, what="haproxy's stats socket", process=self._process
        )

    def server_state(self) -> dict[str, str]:
        """The `show stat` row of the one frontend replica."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "frontends" and row.get("svname") == "frontend1":
                return row
        raise AssertionError(f"no frontend1 in:\n{data.decode()}")


def test_haproxy_with_the_shipped_config_checks_a_tls_frontend_and_passes_client_certificates_through(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    test_pki: TestPki,
    tmp_path: Path,
) -> None:
    mirror = example_registry(
        mirror_factory,
        upstream,
        PASSWORDS,
        extra_rules=(NODE_RULE,),
        client_ca=test_pki.ca_path,
    )
    lb = ShippedHaproxy(tmp_path / "lb", mirror.host_port)
    lb.start()
    try:
        # The health check got a 200 from /readyz, over TLS, without credentials.
        poll_until(
            lambda: lb.server_state()["check_status"] == "L7OK",
            20.0,
            what="haproxy's TLS health check of the frontend",
            log_path=lb.log_path,
        )
        state = lb.server_state()
        assert state["status"] == "UP" and state["check_code"] == "200"

        ca = str(K8S / "ca.example.crt")
        manifest_url = f"{lb.url}/v2/docker-io/fixtures/small/manifests/latest"
        accept = {"Accept": small_image.media_type}
        # The registry's own certificate, through the load balancer: passthrough.
        assert requests.get(f"{lb.url}/readyz", verify=ca, timeout=30).status_code == 200
        assert requests.get(manifest_url, headers=accept, verify=ca, timeout=30).status_code == 401
        # A node's certificate reaches the registry and is an identity the rule allows.
        node = test_pki.client("node-1", organization="registry-nodes")
        answer = requests.get(
            manifest_url,
            headers=accept,
            verify=ca,
            cert=(str(node.cert), str(node.key)),
            timeout=30,
        )
        assert answer.status_code == 200
        assert answer.headers["Docker-Content-Digest"] == small_image.digest
        other = test_pki.client("laptop", organization="someone-else")
        refused = requests.get(
            manifest_url,
            headers=accept,
            verify=ca,
            cert=(str(other.cert), str(other.key)),
            timeout=30,
        )
        assert refused.status_code == 403
        mirror.wait_for_log("identity=cert:node-1")
    finally:
        lb.stop()


def test_a_plain_http_health_check_would_take_the_tls_frontend_out_of_rotation(
    mirror_factory: MirrorFactory, upstream: Distribution, tmp_path: Path
) -> None:
    """The control for the test above: without check-ssl the same check fails."""
    mirror = example_registry(mirror_factory, upstream, PASSWORDS)
    lb = ShippedHaproxy(tmp_path / "lb", mirror.host_port, check_ssl=False)
    lb.start()
    try:
        poll_until(
            lambda: lb.server_state()["status"] == "DOWN",
            30.0,
            what="haproxy marking the frontend down",
            log_path=lb.log_path,
        )
        assert lb.server_state()["check_status"] != "L7OK"
    finally:
        lb.stop()


# --------------------------------------------------------------------------- documentation


def test_the_deploy_readme_says_where_the_certificate_goes_how_to_add_a_user_and_the_client_side() -> (
    None
):
    readme = (DEPLOY / "README.md").read_text()
    for needle in (
        "make-example-certs.sh",
        "REGISTRY_TLS_CERTIFICATE_FILE",
        "REGISTRY_ACCESS_FILE",
        "kubectl -n simple-registry create secret tls simple-registry-tls",
        "cert-manager",
        "argon2.PasswordHasher().hash",
        "[auth.identity.",
        "/etc/docker/certs.d/registry.internal:5000/ca.crt",
        "docker login registry.internal:5000",
        "hosts.toml",
        'ca = "',
        "client = [[",
        "--cert-dir",
        "certs.d",
        "--src-cert-dir",
        "check-ssl verify none",
        "trusted_proxies",
        "scheme: HTTPS",
        "password_file",
        "EXAMPLE",
    ):
        assert needle in readme, needle
    assert NODE_RULE.split(" && ")[0] in readme


def test_the_smoke_script_logs_in_over_https_with_the_example_ca() -> None:
    """deploy/smoke.sh needs a Docker engine (not run here): at least its access file is
    the shipped [server.tls] plus an identity, and its pulls trust the EXAMPLE CA."""
    text = (DEPLOY / "smoke.sh").read_text()
    assert "REGISTRY_ACCESS_FILE" in text
    assert "ca.example.crt" in text and "--src-cert-dir" in text and "--src-creds" in text
    extract = re.search(r"sed -n '(/\^\\\[server\.tls\\\]/,/\^server_private_key/p)'", text)
    assert extract is not None
    result = subprocess.run(
        ["sed", "-n", extract.group(1), str(ACCESS_FILES["compose"])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert tomllib.loads(result.stdout) == {
        "server": {"tls": tomllib.loads(ACCESS_FILES["compose"].read_text())["server"]["tls"]}
    }
    # smoke.sh pulls from 127.0.0.1, verifying the certificate: the example names it.
    assert "127.0.0.1" in names_of(certificate(EXAMPLE_SETS["compose"] / "tls.example.crt"))
