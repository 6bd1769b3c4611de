"""The settings types: typed, frozen, and the only place where a default value is written.

The loader reads each default from these classes (`default_of`); nothing else repeats one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    default_allow: bool = False


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
    # Circuit breaker: consecutive failures that open it, and how long it stays open.
    upstream_failure_threshold: int = 3
    upstream_cooldown_secs: float = 30.0


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
    access_policy: AccessPolicy = AccessPolicy()
    # A mutable tag checked upstream less than this long ago is answered from cache.
    manifest_check_interval_secs: float = 0.0

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


@dataclass(frozen=True, slots=True)
class CacherSettings:
    metrics_port: int = 9100
    metrics_bind_address: str = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings
    global_: GlobalSettings
    storage: StorageSettings
    repositories: Mapping[str, RepositorySettings]
    queue: RedisQueueSettings | None = None
    cacher: CacherSettings = CacherSettings()
    unknown_keys: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()

    @property
    def retry(self) -> RetrySettings:
        return self.queue if self.queue is not None else RetrySettings()
