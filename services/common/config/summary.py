"""What start-up says it will do: one line per repository, the storage, the queue, the
listener, who may get in — and a warning where the access policy lets nobody in or the
certificate served is the shipped example."""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from .settings import AccessPolicy, FsStorageSettings, Settings

# SHA-256 of the DER of the EXAMPLE server certificate in deploy/ (compose/secrets/ and k8s/,
# made by deploy/make-example-certs.sh --example): its private key is published with the
# source, so a registry serving it can be impersonated by anyone.
EXAMPLE_CERTIFICATES = frozenset(
    {"00deb51dc49e4fef352293949042fcdc1e18a1713b2428d7552db7ee06f131e3"}
)
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
)


def _policy(policy: AccessPolicy) -> str:
    if policy.legacy_default_allow:
        base = "default_allow" if policy.default_allow else "default_allow = false"
    else:
        base = "default allow" if policy.default_allow else "default deny"
    return f"{base}, {len(policy.rules)} rule{'s' * (len(policy.rules) != 1)}"


def describe(settings: Settings) -> list[str]:
    lines = []
    server = settings.server
    scheme = "https" if server.tls is not None else "http"
    tls = ""
    if server.tls is not None:
        tls = " (TLS"
        if server.tls.client_ca_bundle is not None:
            tls += f", client certificates {server.tls.client_auth}"
        tls += ")"
    lines.append(f"listener {scheme}://{server.bind_address}:{server.port}{tls}")
    storage = settings.storage
    if isinstance(storage, FsStorageSettings):
        lines.append(f"storage filesystem {storage.root_dir} sync_to_disk={storage.sync_to_disk}")
    else:
        lines.append(
            f"storage s3 bucket={storage.bucket} endpoint={storage.endpoint or 'aws'} "
            f"prefix={storage.key_prefix or '-'}"
        )
    if settings.queue is None:
        lines.append("queue in-process (cache jobs run in this process)")
    else:
        parts = urlsplit(settings.queue.url)
        lines.append(
            f"queue redis {parts.scheme}://{parts.hostname}:{parts.port or 6379} "
            f"prefix={settings.queue.key_prefix}"
        )
    auth = settings.auth
    lines.append(
        f"access global policy {_policy(settings.global_.access_policy)}; "
        f"{len(auth.identities)} Basic identities, "
        f"{len(auth.oidc)} OIDC providers{_names([p.name for p in auth.oidc])}, "
        f"{len(auth.webhooks)} webhooks{_names(list(auth.webhooks))}, "
        f"{len(settings.global_.trusted_proxies)} trusted proxies"
    )
    for repository in settings.repositories.values():
        upstreams = ", ".join(
            u.url + (" (with credentials)" if u.username else "") for u in repository.upstreams
        )
        immutable = "immutable tags" if repository.immutable_tags else "mutable tags"
        if repository.immutable_tags and repository.immutable_tags_exclusions:
            exclusions = ", ".join(p.pattern for p in repository.immutable_tags_exclusions)
            immutable += f" except {exclusions}"
        policy = (
            f"own policy {_policy(repository.access_policy)}"
            if repository.access_policy is not None
            else "global policy only"
        )
        namespace = f" namespace={repository.namespace}" if repository.namespace else ""
        webhook = (
            f", webhook {repository.authorization_webhook}"
            if repository.authorization_webhook
            else ""
        )
        lines.append(
            f'repository "{repository.name}"{namespace}: upstreams {upstreams}; {immutable}; '
            f"{policy}{webhook}"
        )
    return lines


def _names(names: list[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


def _first_certificate_sha256(bundle: Path) -> str | None:
    try:
        match = _PEM_CERTIFICATE.search(bundle.read_text(errors="replace"))
        if match is None:
            return None
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group(0))).hexdigest()
    except (OSError, ValueError):
        return None


def warnings(settings: Settings) -> list[str]:
    found = []
    tls = settings.server.tls
    if tls is not None and (
        _first_certificate_sha256(tls.server_certificate_bundle) in EXAMPLE_CERTIFICATES
    ):
        found.append(
            f"server.tls.server_certificate_bundle ({tls.server_certificate_bundle}) is the "
            "EXAMPLE certificate shipped with simple-registry: its private key is public, "
            "anyone can impersonate this registry; make your own certificate "
            "(deploy/make-example-certs.sh, deploy/README.md)"
        )
    if settings.global_.access_policy.denies_everything:
        found.append(
            "the global access policy denies every request (default deny and no rules): "
            "nothing will be served, not even /healthz; set "
            '[global.access_policy] default = "allow", or add rules'
        )
    for repository in settings.repositories.values():
        policy = repository.access_policy
        if policy is not None and policy.denies_everything:
            found.append(
                f'repository "{repository.name}" has an access policy that denies every '
                "request (default deny and no rules)"
            )
    return found
