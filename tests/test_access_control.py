"""Who gets in: TLS, Basic identities with Argon2 hashes, mTLS, OIDC, CEL access policies,
webhooks, and the answers a refused client gets — over real clients where one exists."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import argon2
import pytest
import requests
import tomli_w

from tests.fixtures.access import (
    TestIssuer,
    TestWebhook,
    argon2_hash,
    cert_dir,
    identities,
    tls_get,
    tls_table,
)
from tests.fixtures.distribution import Distribution
from tests.fixtures.haproxy import Haproxy
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import poll_until
from tests.fixtures.skopeo import SKOPEO
from tests.fixtures.tls import TestPki

REPO = "docker-io"
READ_HEALTH = "request.action in ['healthz', 'readyz']"
PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}


@pytest.fixture(scope="module")
def secret_image(upstream: Distribution, pushed_images: PushedImageCache) -> PushedImage:
    return pushed_images.get(upstream, "small", name="team/secret")


def policy(rules: list[str], default: str = "deny") -> dict[str, Any]:
    return {"access_policy": {"default": default, "rules": rules}}


def start_secure(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    *,
    rules: list[str],
    default: str = "deny",
    users: dict[str, str] | None = None,
    mutual: bool = False,
    tls: bool = True,
    global_extra: dict[str, Any] | None = None,
    auth_extra: dict[str, Any] | None = None,
) -> Mirror:
    extra: dict[str, Any] = {}
    if tls:
        extra["server"] = {"tls": tls_table(test_pki, test_pki.server("registry"), mutual=mutual)}
    auth: dict[str, Any] = dict(auth_extra or {})
    if users:
        auth["identity"] = identities(users)
    if auth:
        extra["auth"] = auth
    return mirror_factory(
        {REPO: {"upstream": [upstream_entry(upstream)]}},
        global_={**policy(rules, default), **(global_extra or {})},
        extra=extra,
    )


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def skopeo_pull(
    mirror: Mirror,
    name: str,
    dest: Path,
    certs: Path,
    creds: tuple[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """skopeo copy over TLS, verifying the registry with the CA in `certs`."""
    args = [SKOPEO, "--insecure-policy", "copy", "--retry-times", "0", "--src-cert-dir", str(certs)]
    args += ["--src-creds", f"{creds[0]}:{creds[1]}"] if creds else ["--src-no-creds"]
    args += [f"docker://{mirror.host_port}/{REPO}/{name}", f"dir:{dest}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


# -- TLS -----------------------------------------------------------------------------------


def test_a_tls_registry_answers_https_and_nothing_in_plain_text(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki
) -> None:
    mirror = start_secure(mirror_factory, upstream, test_pki, rules=[], default="allow")
    assert mirror.url.startswith("https://")
    assert tls_get(f"{mirror.url}/v2/", test_pki).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{mirror.host_port}/v2/", timeout=10)
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as raw:
        raw.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = raw.recv(4096)
    assert b"HTTP/1.1 200" not in answer and b"{}" not in answer


def dockerfile_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command, as Docker runs it."""
    text = (Path(__file__).parent.parent / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE)
    assert match is not None, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    command: list[str] = json.loads(match.group(1))
    return [sys.executable if part == "python3" else part for part in command]


def test_the_images_healthcheck_answers_for_a_plain_and_a_tls_registry_and_fails_for_none(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki
) -> None:
    command = dockerfile_healthcheck()
    secure = start_secure(mirror_factory, upstream, test_pki, rules=[], default="allow")
    plain = start_secure(mirror_factory, upstream, test_pki, rules=[], default="allow", tls=False)
    for url, expected in (
        (f"{secure.url}/healthz", 0),
        (f"{plain.url}/healthz", 0),
        (f"http://{secure.host_port}/healthz", 1),  # plain text to a TLS port: no answer
    ):
        probe = subprocess.run(
            command,
            env={"SIMPLE_REGISTRY_HEALTHCHECK_URL": url},
            capture_output=True,
            timeout=30,
        )
        assert probe.returncode == expected, (url, probe.stderr[-300:])


def test_a_renewed_certificate_is_served_without_a_restart(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki
) -> None:
    mirror = start_secure(mirror_factory, upstream, test_pki, rules=[], default="allow")
    served = Path(mirror.config["server"]["tls"]["server_certificate_bundle"])
    key = Path(mirror.config["server"]["tls"]["server_private_key"])

    def common_name() -> str:
        context = ssl.create_default_context(cafile=str(test_pki.ca_path))
        with (
            socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            cert = tls.getpeercert()
            assert cert is not None
            # The stub types every field alike; "subject" is RDNs of (name, value) pairs.
            rdns = cast(tuple[tuple[tuple[str, str], ...], ...], cert["subject"])
            subject = dict(item[0] for item in rdns)
        return str(subject["commonName"])

    assert common_name() == "localhost"
    renewed = test_pki.server("renewed", common_name="renewed.localhost")
    # Key first, then the chain: the reload happens once both match.
    shutil.copy(renewed.key, key)
    shutil.copy(renewed.cert, served)
    poll_until(lambda: common_name() == "renewed.localhost", 20.0, what="the renewed certificate")
    assert tls_get(f"{mirror.url}/v2/", test_pki).status_code == 200


# -- identities and rules --------------------------------------------------------------------


def test_each_user_pulls_what_the_rules_allow_and_anonymous_is_challenged(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    small_image: PushedImage,
    secret_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = start_secure(
        mirror_factory,
        upstream,
        test_pki,
        users=PASSWORDS,
        rules=[
            READ_HEALTH,
            "identity.username == 'alice'",
            "identity.username == 'bob' && (request.action == 'get-api-version' || "
            "(has(request.namespace) && request.namespace == 'docker-io/fixtures/small'))",
        ],
    )
    certs = cert_dir(tmp_path / "certs", test_pki)
    for user, name, allowed in (
        ("alice", "team/secret:latest", True),
        ("alice", "fixtures/small:latest", True),
        ("bob", "fixtures/small:latest", True),
        ("bob", "team/secret:latest", False),
    ):
        dest = tmp_path / f"{user}-{name.replace('/', '-')}"
        result = skopeo_pull(mirror, name, dest, certs, (user, PASSWORDS[user]))
        assert (result.returncode == 0) is allowed, (user, name, result.stderr)
        if allowed:
            image = secret_image if "secret" in name else small_image
            assert (dest / "manifest.json").read_bytes() == image.manifest_bytes
        else:
            assert "denied" in result.stderr.lower() or "403" in result.stderr
    anonymous = skopeo_pull(mirror, "fixtures/small:latest", tmp_path / "anon", certs)
    assert anonymous.returncode != 0

    url = f"{mirror.url}/v2/{REPO}/fixtures/small/manifests/latest"
    challenged = tls_get(url, test_pki)
    assert challenged.status_code == 401
    assert challenged.headers["WWW-Authenticate"].startswith('Basic realm="')
    assert challenged.json()["errors"][0]["code"] == "UNAUTHORIZED"
    wrong = tls_get(url, test_pki, headers=basic("alice", "not-her-password"))
    assert wrong.status_code == 401
    unknown = tls_get(url, test_pki, headers=basic("mallory", "whatever"))
    assert unknown.status_code == 401
    denied = tls_get(
        f"{mirror.url}/v2/{REPO}/team/secret/manifests/latest",
        test_pki,
        headers=basic("bob", PASSWORDS["bob"]),
    )
    assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
    # Neither answer tells whether a repository exists or is cached.
    nowhere = tls_get(
        f"{mirror.url}/v2/nowhere/at/all/manifests/latest",
        test_pki,
        headers=basic("bob", PASSWORDS["bob"]),
    )
    assert (nowhere.status_code, nowhere.json()) == (denied.status_code, denied.json())

    log = mirror.log()
    assert re.search(
        r'"GET /v2/docker-io/team/secret/manifests/latest HTTP/1.1" 403 .* identity=id:bob access=deny',
        log,
    )
    assert re.search(r"identity=id:alice access=allow", log)


def test_a_verified_password_is_remembered_so_argon2_runs_once_even_for_concurrent_requests(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    small_image: PushedImage,
) -> None:
    # Argon2's default cost (tens of milliseconds), so that the requests overlap.
    costly = {"alice": {"username": "alice", "password": argon2.PasswordHasher().hash("pw")}}
    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False, auth_extra={"identity": costly},
        rules=["identity.username == 'alice'", "request.action == 'metrics'"],
    )  # fmt: skip
    url = f"{mirror.url}/v2/{REPO}/fixtures/small/manifests/latest"

    def pull(_: int) -> int:
        return requests.get(url, headers=basic("alice", "pw"), timeout=30).status_code

    # All at once: the ones that arrive while the first is being verified wait for it.
    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(pull, range(20))) == [200] * 20
    metrics = requests.get(f"{mirror.url}/metrics", timeout=30).text
    assert 'registry_password_verifications_total{result="match"} 1.0' in metrics
    assert 'registry_auth_attempts_total{method="basic",result="success"} 20.0' in metrics


def test_a_client_certificate_whose_organization_a_rule_allows_pulls_without_a_password(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    small_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = start_secure(
        mirror_factory, upstream, test_pki, mutual=True,
        rules=[READ_HEALTH, "identity.certificate.organizations.contains('DevOps')"],
    )  # fmt: skip
    devops = cert_dir(tmp_path / "devops", test_pki, test_pki.client("ci", organization="DevOps"))
    sales = cert_dir(tmp_path / "sales", test_pki, test_pki.client("crm", organization="Sales"))
    allowed = skopeo_pull(mirror, "fixtures/small:latest", tmp_path / "a", devops)
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "a" / "manifest.json").read_bytes() == small_image.manifest_bytes
    refused = skopeo_pull(mirror, "fixtures/small:latest", tmp_path / "b", sales)
    assert refused.returncode != 0
    rogue = TestPki(tmp_path / "rogue", name="rogue-ca")
    untrusted = cert_dir(
        tmp_path / "rogue-client", test_pki, rogue.client("ci", organization="DevOps")
    )
    assert skopeo_pull(mirror, "fixtures/small:latest", tmp_path / "c", untrusted).returncode != 0
    assert "identity=cert:ci access=allow" in mirror.log()


def test_a_rule_that_fails_is_skipped_under_deny_and_denies_under_allow(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    small_image: PushedImage,
) -> None:
    failing = "identity.oidc.claims['repository'] == 'x'"  # oidc is null: an error
    skip = start_secure(
        mirror_factory, upstream, test_pki, tls=False, rules=[failing, "request.action != ''"]
    )
    url = f"/v2/{REPO}/fixtures/small/manifests/latest"
    assert skip.get(url).status_code == 200
    assert "access rule global.access_policy.rules[0] skipped" in skip.log()
    closed = start_secure(
        mirror_factory, upstream, test_pki, tls=False, default="allow", rules=[failing]
    )
    assert closed.get(url).status_code == 403


def test_under_default_allow_a_true_rule_denies(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    small_image: PushedImage,
) -> None:
    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False, users=PASSWORDS, default="allow",
        rules=["identity.username == 'bob'"],
    )  # fmt: skip
    url = f"/v2/{REPO}/fixtures/small/manifests/latest"
    assert mirror.get(url, headers=basic("alice", PASSWORDS["alice"])).status_code == 200
    assert mirror.get(url, headers=basic("bob", PASSWORDS["bob"])).status_code == 403
    assert mirror.get(url).status_code == 200


def test_client_ip_rules_trust_forwarded_addresses_only_from_a_trusted_proxy(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    test_pki: TestPki,
    small_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False,
        rules=[READ_HEALTH, "identity.client_ip == '127.0.0.3'"],
        global_extra={"trusted_proxies": ["127.0.0.1/32"]},
    )  # fmt: skip

    class ForwardingHaproxy(Haproxy):
        def config(self) -> str:
            return (
                super()
                .config()
                .replace("    mode http\n", "    mode http\n    option forwardfor\n")
            )

    proxy = ForwardingHaproxy(tmp_path / "haproxy", [mirror.host_port]).start()
    try:
        path = f"/v2/{REPO}/fixtures/small/manifests/latest"

        def curl(base: str, source: str, *headers: str) -> int:
            args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", source]
            for header in headers:
                args += ["-H", header]
            return int(
                subprocess.run(
                    [*args, base + path], capture_output=True, text=True, timeout=30
                ).stdout
            )

        assert curl(proxy.url, "127.0.0.3") == 200  # through the trusted proxy
        assert curl(proxy.url, "127.0.0.4") == 403
        # A client that is not a trusted proxy cannot claim an address.
        assert curl(mirror.url, "127.0.0.4", "X-Forwarded-For: 127.0.0.3") == 403
        assert curl(mirror.url, "127.0.0.3") == 200
    finally:
        proxy.stop()


# -- OIDC ----------------------------------------------------------------------------------


def test_oidc_tokens_are_verified_against_the_issuers_keys(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki,
    small_image: PushedImage, test_issuer: TestIssuer,
) -> None:  # fmt: skip
    from cryptography.hazmat.primitives.asymmetric import rsa

    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False,
        rules=["identity.oidc != null && identity.oidc.claims['repository'].startsWith('myorg/')"],
        auth_extra={"oidc": {"ci": {"issuer": test_issuer.issuer, "required_audience": "registry",
                                    "clock_skew_tolerance": 5}}},
    )  # fmt: skip
    url = f"{mirror.url}/v2/{REPO}/fixtures/small/manifests/latest"

    def status(token: str, *, as_basic: bool = False) -> int:
        header = basic("ci", token) if as_basic else {"Authorization": f"Bearer {token}"}
        return requests.get(url, headers=header, timeout=30).status_code

    good = test_issuer.token({"repository": "myorg/app"})
    assert status(good) == 200
    assert status(good, as_basic=True) == 200  # docker login --username ci --password-stdin
    assert status(test_issuer.token({"repository": "other/app"})) == 403
    assert status(test_issuer.token({"repository": "myorg/app"}, expires_in=-60)) == 401
    assert status(test_issuer.token({"repository": "myorg/app"}, audience="someone-else")) == 401
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert status(test_issuer.token({"repository": "myorg/app"}, key=other_key)) == 401
    assert (
        status(test_issuer.token({"repository": "myorg/app"}, issuer="https://elsewhere.example"))
        == 401
    )
    # The discovery document and the keys were fetched once, not per request.
    assert test_issuer.requests.count("/keys") == 1
    assert test_issuer.requests.count("/.well-known/openid-configuration") == 1


# -- what refused and allowed clients see --------------------------------------------------------


def test_catalog_and_tag_lists_show_only_what_the_identity_may_read(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki,
    small_image: PushedImage, secret_image: PushedImage,
) -> None:  # fmt: skip
    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False, users=PASSWORDS,
        rules=[
            "identity.username == 'alice'",
            "identity.username == 'bob' && request.action in ['list-catalog', 'list-tags', 'get-manifest']"
            " && (!has(request.namespace) || !request.namespace.contains('secret'))",
        ],
    )  # fmt: skip
    alice = basic("alice", PASSWORDS["alice"])
    for name in ("fixtures/small", "team/secret"):
        assert mirror.get(f"/v2/{REPO}/{name}/manifests/latest", headers=alice).status_code == 200
        mirror.wait_for_tag(f"{REPO}/{name}", "latest")
    everything = mirror.get("/v2/_catalog", headers=alice).json()["repositories"]
    assert everything == [f"{REPO}/fixtures/small", f"{REPO}/team/secret"]
    bobs = mirror.get("/v2/_catalog", headers=basic("bob", PASSWORDS["bob"])).json()
    assert bobs["repositories"] == [f"{REPO}/fixtures/small"]
    assert mirror.get("/v2/_catalog").status_code == 401


def test_metrics_and_health_answer_as_the_policy_says(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki
) -> None:
    mirror = start_secure(mirror_factory, upstream, test_pki, tls=False, rules=[READ_HEALTH])
    assert mirror.get("/healthz").status_code == 200
    assert mirror.get("/readyz").status_code == 200
    refused = mirror.get("/metrics")
    assert refused.status_code == 403 and "registry_" not in refused.text
    assert mirror.get("/v2/").status_code == 403


def test_the_authorization_webhook_is_asked_after_the_policy_and_fails_closed(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki,
    small_image: PushedImage, test_webhook: TestWebhook,
) -> None:  # fmt: skip
    test_webhook.allowed = {"alice"}
    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False, users=PASSWORDS,
        rules=["identity.username != null"],
        global_extra={"authorization_webhook": "gate"},
        auth_extra={"webhook": {"gate": {"url": test_webhook.url, "timeout_ms": 2000, "cache_ttl": 60}}},
    )  # fmt: skip
    url = f"/v2/{REPO}/fixtures/small/manifests/latest"
    assert mirror.get(url, headers=basic("alice", PASSWORDS["alice"])).status_code == 200
    assert mirror.get(url, headers=basic("alice", PASSWORDS["alice"])).status_code == 200
    assert mirror.get(url, headers=basic("bob", PASSWORDS["bob"])).status_code == 403
    assert mirror.get(url).status_code == 401  # the policy refused: the webhook is not asked
    calls = test_webhook.calls
    assert len(calls) == 2  # alice's answer was remembered
    assert calls[0]["X-Registry-Action"] == "get-manifest"
    assert calls[0]["X-Registry-Namespace"] == f"{REPO}/fixtures/small"
    assert calls[0]["X-Registry-Username"] == "alice" and "Authorization" not in calls[0]
    test_webhook.status_override = 500  # a failing webhook denies, and is not remembered
    assert mirror.get(url, headers=basic("bob", PASSWORDS["bob"])).status_code == 403
    test_webhook.server.stop()
    assert (
        mirror.get(
            f"/v2/{REPO}/fixtures/small/manifests/other", headers=basic("bob", PASSWORDS["bob"])
        ).status_code
        == 403
    )


def test_a_clients_credentials_never_reach_the_upstream_and_no_secret_is_ever_shown(
    mirror_factory: MirrorFactory, upstream: Distribution, test_pki: TestPki,
    small_image: PushedImage, test_issuer: TestIssuer,
) -> None:  # fmt: skip
    users = {"alice": "alice-secret-pw"}
    mirror = start_secure(
        mirror_factory, upstream, test_pki, tls=False, users=users,
        rules=["identity.username == 'alice' || identity.oidc != null"],
        auth_extra={"oidc": {"ci": {"issuer": test_issuer.issuer}}},
    )  # fmt: skip
    token = test_issuer.token({"repository": "myorg/app"}, audience="x")
    answers = [
        mirror.get(
            f"/v2/{REPO}/fixtures/small/manifests/latest", headers=basic("alice", users["alice"])
        ),
        mirror.get(
            f"/v2/{REPO}/fixtures/small/manifests/latest",
            headers={"Authorization": f"Bearer {token}"},
        ),
        mirror.get("/v2/_catalog", headers=basic("alice", "wrong-guess-pw")),
        mirror.get("/metrics", headers=basic("alice", users["alice"])),
    ]
    assert [a.status_code for a in answers[:3]] == [200, 200, 401]
    hashes = [t["password"] for t in mirror.config["auth"]["identity"].values()]
    secrets = [
        "alice-secret-pw",
        "wrong-guess-pw",
        token,
        *hashes,
        base64.b64encode(b"alice:alice-secret-pw").decode(),
    ]
    seen = mirror.log() + "".join(a.text + str(a.headers) for a in answers)
    for secret in secrets:
        assert secret not in seen


# -- configuration -------------------------------------------------------------------------


def check_config(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "simple_registry.cli", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )


BASE_CONFIG: dict[str, Any] = {
    "server": {"bind_address": "127.0.0.1", "port": 5000},
    "blob_store": {"fs": {"root_dir": "/tmp/unused"}},
    "repository": {REPO: {"upstream": [{"url": "https://registry-1.docker.io"}]}},
}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"server": {"tls": {"server_certificate_bundle": "/root/none.pem", "server_private_key": "/root/none.key"}}},
         "server.tls.server_certificate_bundle"),
        ({"global": {"access_policy": {"rules": ["request.action == "]}}}, "global.access_policy.rules[0]"),
        ({"global": {"access_policy": {"rules": ["identity.usernmae == 'a'"]}}}, "global.access_policy.rules[0]"),
        ({"auth": {"identity": {"a": {"username": "a", "password": argon2_hash("x"), "groups": ["x"]}}}},
         "auth.identity.a.groups"),
        ({"repository": {REPO: {"upstream": [{"url": "https://r.example"}],
                                "access_policy": {"default": "deny", "rules": ["nope()"]}}}},
         'repository."docker-io".access_policy.rules[0]'),
    ],
)  # fmt: skip
def test_a_bad_access_setting_stops_start_up_naming_its_key(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    config = {**BASE_CONFIG, **change}
    result = check_config(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_start_up_says_what_it_will_do_and_warns_when_the_policy_lets_nobody_in(
    tmp_path: Path,
) -> None:
    config = {
        **BASE_CONFIG,
        "repository": {
            REPO: {
                "immutable_tags": True,
                "upstream": [{"url": "https://registry-1.docker.io", "username": "u", "password": "hunter2-pw"}],
            }
        },
    }  # fmt: skip
    result = check_config(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert (
        'repository "docker-io": upstreams https://registry-1.docker.io (with credentials); immutable tags; global policy only'
        in result.stderr
    )
    assert "WARNING" in result.stderr and "denies every request" in result.stderr
    assert "hunter2-pw" not in result.stderr
    allowed = check_config(tmp_path, {**config, "global": {"access_policy": {"default": "allow"}}})
    assert "denies every request" not in allowed.stderr


def test_an_anonymous_pull_under_the_legacy_default_allow_is_unchanged(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}})
    answer = mirror.get(f"/v2/{REPO}/fixtures/small/manifests/latest")
    assert answer.status_code == 200 and answer.content == small_image.manifest_bytes
    assert "identity=anonymous access=allow" in mirror.log()
