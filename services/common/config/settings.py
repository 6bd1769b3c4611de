"""The settings types: typed, frozen, and the only place where a default value is written.

The loader reads each default from these classes (`default_of`); nothing else repeats one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..cel import Rule

DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})


def default_of(cls: type, name: str) -> Any:
    """The declared default of a settings field (on a slots dataclass the class attribute
    is a descriptor, so read it from the field)."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name}")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    bind_address: str = "0.0.0.0"
    port: int = 8000
    # Graceful stop: how long in-flight requests may finish after SIGTERM.
    drain_timeout_secs: float = 30.0
    # Worker processes sharing the listening socket (use the cores of a pod).
    workers: int = 1
    tls: TlsSettings | None = None
    # Client connections a process holds at once; one more is answered 503 and closed.
    max_connections: int = 1000
    # A client that accepts no byte of a response for this long is disconnected.
    write_timeout_secs: float = 60.0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """`[server.tls]`: with it nothing is served in plain text."""

    server_certificate_bundle: Path
    server_private_key: Path
    client_ca_bundle: Path | None = None  # mTLS: a presented certificate is verified
    client_auth: str = "optional"  # or "required" (needs client_ca_bundle)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """`access_policy`: under `default = "deny"` a true rule allows; under "allow" a true
    rule denies. `default_allow` (the older form) grants reads only, never a delete."""

    default_allow: bool = False
    rules: tuple[Rule, ...] = ()
    legacy_default_allow: bool = False

    @property
    def denies_everything(self) -> bool:
        return not self.default_allow and not self.rules


@dataclass(frozen=True, slots=True)
class BasicIdentity:
    """`[auth.identity.<id>]`: a user presented with HTTP Basic, its password an Argon2 hash."""

    id: str
    username: str
    password_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """`[auth.oidc.<name>]`: JWTs signed by this issuer's keys."""

    name: str
    issuer: str
    jwks_uri: str | None = None  # None: from the issuer's discovery document
    required_audience: str | None = None
    required_claims: tuple[str, ...] = ()
    clock_skew_tolerance_secs: float = 60.0
    jwks_refresh_interval_secs: float = 3600.0
    allowed_algorithms: tuple[str, ...] = ("RS256",)
    http_request_timeout_secs: float = 30.0
    server_ca_bundle: Path | None = None


@dataclass(frozen=True, slots=True)
class AuthWebhook:
    """`[auth.webhook.<name>]`: an HTTP service asked after the access policy allowed."""

    name: str
    url: str
    timeout_ms: int
    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    client_certificate_bundle: Path | None = None
    client_private_key: Path | None = None
    server_ca_bundle: Path | None = None
    forward_headers: tuple[str, ...] = ()
    cache_ttl_secs: float = 60.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    identities: tuple[BasicIdentity, ...] = ()
    oidc: tuple[OidcProvider, ...] = ()
    webhooks: Mapping[str, AuthWebhook] = field(default_factory=dict)

    @property
    def accepts_credentials(self) -> bool:
        return bool(self.identities or self.oidc)


@dataclass(frozen=True, slots=True)
class GlobalSettings:
    max_concurrent_cache_jobs: int = 4
    immutable_tags: bool = False
    immutable_tags_exclusions: tuple[re.Pattern[str], ...] = ()
    max_manifest_size: int = 4 * 1024 * 1024
    max_blob_size: int | None = None
    enable_blob_redirect: bool = True
    default_repository: str | None = None
    access_policy: AccessPolicy = AccessPolicy()
    # Tag lists: "cache" lists the cached tags (Angos), "upstream" forwards to the upstream.
    tag_list: str = "cache"
    # Peers whose X-Forwarded-For sets identity.client_ip (addresses or networks).
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    authorization_webhook: str | None = None
    # Circuit breaker: consecutive failures that open it, and how long it stays open.
    upstream_failure_threshold: int = 3
    upstream_cooldown_secs: float = 30.0
    # The first probe of an open breaker comes this soon; each failed probe doubles the
    # wait, up to upstream_cooldown_secs.
    upstream_first_cooldown_secs: float = 0.5
    # Networks an upstream's redirects and token realms may point into besides public
    # addresses and the upstream's own kind of range (an SSRF guard, upstream/targets.py).
    allowed_redirect_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # Record when each tag and manifest was last pulled (retention rules, the budget).
    update_pull_time: bool = False
    retention_policy: RetentionPolicy | None = None
    # Angos's name for [eviction] blob_grace_secs, its default when set.
    gc_grace_secs: float | None = None


@dataclass(frozen=True, slots=True)
class FsStorageSettings:
    root_dir: Path
    sync_to_disk: bool = False


@dataclass(frozen=True, slots=True)
class S3StorageSettings:
    bucket: str
    region: str
    endpoint: str | None
    access_key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    key_prefix: str = ""
    multipart_part_size: int = 50 * 1024 * 1024


StorageSettings = FsStorageSettings | S3StorageSettings


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout_secs: float = 10.0
    read_timeout_secs: float = 60.0
    server_ca_bundle: Path | None = None
    client_certificate: Path | None = None
    client_private_key: Path | None = None
    max_redirect: int = 5
    # Overall deadline of a manifest, HEAD or token request (of a blob: until its headers).
    request_timeout_secs: float = 120.0
    # Blob downloads from this upstream at once; the rest wait up to connect_timeout_secs.
    max_concurrent_downloads: int = 32

    @property
    def base_url(self) -> str:
        """Scheme and host, without the namespace path."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def namespace_path(self) -> str:
        """The URL's path, used as a prefix of every upstream name (may be empty)."""
        return urlsplit(self.url).path.strip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True, slots=True)
class RepositorySettings:
    name: str
    upstreams: tuple[UpstreamSettings, ...]
    immutable_tags: bool
    immutable_tags_exclusions: tuple[re.Pattern[str], ...]
    namespace: str | None = None
    # Applies besides the global policy (both must allow) when the repository declares one.
    access_policy: AccessPolicy | None = None
    # The webhook asked for this repository (its own, else the global one; "" turns it off).
    authorization_webhook: str | None = None
    # A mutable tag checked upstream less than this long ago is answered from cache.
    manifest_check_interval_secs: float = 0.0
    tag_list: str = "cache"  # "upstream": GET tags/list is forwarded (skopeo sync, crane ls)
    retention_policy: RetentionPolicy | None = None

    def is_immutable(self, tag: str) -> bool:
        if not self.immutable_tags:
            return False
        return not any(pattern.search(tag) for pattern in self.immutable_tags_exclusions)

    @property
    def is_docker_hub(self) -> bool:
        return self.namespace == "docker.io" or any(
            u.host in DOCKER_HUB_HOSTS for u in self.upstreams
        )


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How a cacher retries a failed job (the same for the in-process and Redis queues)."""

    max_attempts: int = 5
    retry_backoff_secs: float = 1.0
    retry_backoff_max_secs: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisQueueSettings(RetrySettings):
    url: str = field(repr=False)
    key_prefix: str = "simple-registry"
    claim_timeout_secs: float = 60.0
    # A cacher that cannot reach Redis tries again after 0.5 s, doubling up to this.
    reconnect_backoff_max_secs: float = 30.0
    # HMAC-SHA256 key that signs and checks every cache job; None: not configured (a
    # `server` process then uses a random key of its own).
    job_signing_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CacherSettings:
    metrics_port: int = 9100
    metrics_bind_address: str = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class UiSettings:
    """`[ui]`: Angos's `enabled` and `name`, and how often the cache-status page samples
    this process's counters (ours)."""

    enabled: bool = False
    name: str = "Simple-Registry"
    stats_interval_secs: float = 10.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """`retention_policy`: a tag (or an untagged manifest) is kept when any rule is true; a
    rule that fails keeps it. No rules at all keeps everything (Angos's semantics)."""

    rules: tuple[Rule, ...] = ()
    # A rule reads image.last_pulled_at or calls top_pulled() (needs update_pull_time).
    uses_pull_times: bool = False


@dataclass(frozen=True, slots=True)
class EvictionSettings:
    """`[eviction]` (ours): the storage budget and the lifecycle's timing."""

    max_size: int | None = None  # bytes of committed content; None: no budget
    interval_secs: float = 300.0  # the cacher's prune + GC; 0: only the commands
    blob_grace_secs: float = 600.0  # an unreferenced blob is deleted only after this long
    pull_time_resolution_secs: float = 60.0  # a pull time is rewritten at most this often


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """`[observability.tracing]` (Angos's keys): OTLP/HTTP traces."""

    endpoint: str
    sampling_rate: float


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    tracing: TracingSettings | None = None
    log_format: str = "text"  # `[observability.logging] format`: "text" or "json"


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings
    global_: GlobalSettings
    storage: StorageSettings
    repositories: Mapping[str, RepositorySettings]
    queue: RedisQueueSettings | None = None
    cacher: CacherSettings = CacherSettings()
    ui: UiSettings = UiSettings()
    auth: AuthSettings = AuthSettings()
    eviction: EvictionSettings = EvictionSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    unknown_keys: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()

    @property
    def retry(self) -> RetrySettings:
        return self.queue if self.queue is not None else RetrySettings()
