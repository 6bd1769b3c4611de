"""Configuration: Simple-Registry's TOML keys for a pull-through registry, plus ours.

`load_settings(paths)` merges the files (later over earlier, tables recursively), checks
every value and returns typed, frozen settings. A bad value raises `ConfigError` naming the
dotted key, the value and what was expected; an unknown key is collected in
`Settings.unknown_keys` so that start-up can report it by its full dotted name.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .oci import NAME_RE


class ConfigError(Exception):
    """A configuration value that stops start-up."""

    def __init__(self, key: str, value: Any, expected: str):
        self.key = key
        self.value = value
        self.expected = expected
        shown = "<hidden>" if _is_secret_key(key) else repr(value)
        super().__init__(f"{key} = {shown}: expected {expected}")


def _is_secret_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in {"password", "secret_key", "access_key_id"}


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "KI": 1024,
    "M": 1000**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "MI": 1024**2,
    "G": 1000**3,
    "GB": 1000**3,
    "GIB": 1024**3,
    "GI": 1024**3,
    "T": 1000**4,
    "TB": 1000**4,
    "TIB": 1024**4,
    "TI": 1024**4,
}


def parse_size(text: str | int) -> int:
    """`"5MiB"` -> 5242880, `"100MB"` -> 100000000, `1024` -> 1024."""
    if isinstance(text, bool):
        raise ValueError("a boolean is not a size")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("negative size")
        return text
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.upper())
    if multiplier is None:
        raise ValueError(f"unknown size unit: {unit!r}")
    return int(float(number) * multiplier)


# --------------------------------------------------------------------------- settings types


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
        hub_hosts = {"registry-1.docker.io", "docker.io", "index.docker.io"}
        return self.namespace == "docker.io" or any(u.host in hub_hosts for u in self.upstreams)


@dataclass(frozen=True, slots=True)
class RedisQueueSettings:
    url: str = field(repr=False)
    key_prefix: str = "simple-registry"
    claim_timeout_secs: float = 60.0
    max_attempts: int = 5
    retry_backoff_secs: float = 1.0
    retry_backoff_max_secs: float = 60.0


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


# Defaults read from instances: on a slots dataclass the class attribute is a descriptor.
_SERVER_DEFAULTS = ServerSettings()
_GLOBAL_DEFAULTS = GlobalSettings()


# --------------------------------------------------------------------------- reading


class _Table:
    """A TOML table being read: typed getters that name the dotted key on error and remember
    which keys were consumed, so that the rest can be reported as unknown."""

    def __init__(self, data: Mapping[str, Any], path: str, unknown: list[str]):
        self._data = data
        self._path = path
        self._unknown = unknown
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._data

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def ignore(self, *names: str) -> None:
        self._seen.update(names)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), None, "a string (this key is required)")
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), value, "a string")
        return value

    def boolean(self, name: str, default: bool | None) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), value, "true or false")
        return value

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), value, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(self.key(name), value, f"an integer at least {minimum}{bound}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ConfigError(self.key(name), value, f"a number of seconds, at least {minimum}")
        return float(value)

    def size(self, name: str, default: int | None) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse_size(value)
        except ValueError:
            raise ConfigError(
                self.key(name), value, 'a size in bytes or with a unit, like "5MiB" or "100MB"'
            ) from None

    def patterns(self, name: str) -> tuple[re.Pattern[str], ...] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), value, "a list of regular expressions")
        compiled = []
        for index, text in enumerate(value):
            try:
                compiled.append(re.compile(text))
            except re.error as error:
                raise ConfigError(
                    f"{self.key(name)}[{index}]", text, f"a valid regular expression ({error})"
                ) from None
        return tuple(compiled)

    def path(self, name: str) -> Path | None:
        value = self.string(name)
        return Path(value) if value is not None else None

    def table(self, name: str) -> _Table | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), value, "a table")
        return _Table(value, self.key(name), self._unknown)

    def tables(self, name: str) -> list[_Table]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(self.key(name), value, "an array of tables ([[...]])")
        return [_Table(v, f"{self.key(name)}[{i}]", self._unknown) for i, v in enumerate(value)]

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._data.items()

    def finish(self) -> None:
        """Record the keys nobody read as unknown."""
        for name in self._data:
            if name not in self._seen:
                self._unknown.append(self.key(name))


# Simple-Registry keys that have no meaning for a pull-through mirror: accepted, reported as
# ignored at start-up so that a copied configuration still loads.
_IGNORED_TOP_LEVEL = ("auth", "cache", "metadata_store", "observability", "ui", "event_webhook")
_IGNORED_GLOBAL = (
    "max_concurrent_requests",
    "update_pull_time",
    "enable_redirect",
    "authorization_webhook",
    "event_webhooks",
    "retention_policy",
)
_IGNORED_REPOSITORY = ("authorization_webhook", "event_webhooks", "retention_policy")
_IGNORED_S3 = (
    "multipart_copy_threshold",
    "multipart_copy_chunk_size",
    "multipart_copy_jobs",
    "multipart_uniform_parts",
    "max_attempts",
    "operation_timeout_secs",
    "operation_attempt_timeout_secs",
)
_IGNORED_SERVER = ("query_timeout", "query_timeout_grace_period", "tls")


def merge_tables(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Later files win; tables merge recursively; arrays and scalars are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_tables(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_files(paths: Iterable[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError("--config", str(path), "an existing TOML file") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("--config", str(path), f"valid TOML ({error})") from None
        except OSError as error:
            raise ConfigError("--config", str(path), f"a readable file ({error})") from None
        merged = merge_tables(merged, data)
    return merged


def load_settings(paths: Iterable[Path]) -> Settings:
    return parse_settings(read_files(paths))


def parse_settings(data: Mapping[str, Any]) -> Settings:
    unknown: list[str] = []
    ignored: list[str] = []
    root = _Table(data, "", unknown)

    server = _parse_server(root.table("server"), ignored)
    global_ = _parse_global(root.table("global"), ignored)
    storage = _parse_storage(root.table("blob_store"), ignored)
    repositories = _parse_repositories(root.table("repository"), global_, ignored)
    queue = _parse_queue(root.table("queue"))
    cacher = _parse_cacher(root.table("cacher"))
    for name in _IGNORED_TOP_LEVEL:
        if root.has(name):
            root.ignore(name)
            ignored.append(name)
    root.finish()

    if global_.default_repository is not None and global_.default_repository not in repositories:
        raise ConfigError(
            "global.default_repository",
            global_.default_repository,
            'the name of a configured [repository."..."]',
        )
    namespaces: dict[str, str] = {}
    for repository in repositories.values():
        if repository.namespace is None:
            continue
        if repository.namespace in namespaces:
            raise ConfigError(
                f'repository."{repository.name}".namespace',
                repository.namespace,
                f'a namespace no other repository uses (also used by "{namespaces[repository.namespace]}")',
            )
        namespaces[repository.namespace] = repository.name

    return Settings(
        server=server,
        global_=global_,
        storage=storage,
        repositories=repositories,
        queue=queue,
        cacher=cacher,
        unknown_keys=tuple(unknown),
        ignored_keys=tuple(ignored),
    )


def _ignore(table: _Table, names: Iterable[str], ignored: list[str]) -> None:
    for name in names:
        if table.has(name):
            table.ignore(name)
            ignored.append(table.key(name))


def _parse_server(table: _Table | None, ignored: list[str]) -> ServerSettings:
    if table is None:
        return ServerSettings()
    settings = ServerSettings(
        bind_address=table.string("bind_address", _SERVER_DEFAULTS.bind_address),
        port=table.integer("port", _SERVER_DEFAULTS.port, minimum=0, maximum=65535),
        drain_timeout_secs=table.number("drain_timeout_secs", _SERVER_DEFAULTS.drain_timeout_secs),
        workers=table.integer("workers", 1, minimum=1, maximum=64),
    )
    _ignore(table, _IGNORED_SERVER, ignored)
    table.finish()
    return settings


def _parse_access_policy(table: _Table | None) -> AccessPolicy | None:
    if table is None:
        return None
    default_allow = table.boolean("default_allow", None)
    default = table.string("default")
    if default_allow is not None and default is not None:
        raise ConfigError(
            table.key("default"), default, "either default or default_allow, not both"
        )
    if default is not None:
        if default not in ("allow", "deny"):
            raise ConfigError(table.key("default"), default, '"allow" or "deny"')
        default_allow = default == "allow"
    rules = table.raw("rules")
    if rules not in (None, []):
        raise ConfigError(
            table.key("rules"),
            rules,
            "an empty list: CEL access rules are not supported by this registry; "
            "use default_allow (a rule is never ignored silently)",
        )
    table.finish()
    return AccessPolicy(default_allow=bool(default_allow))


def _parse_global(table: _Table | None, ignored: list[str]) -> GlobalSettings:
    if table is None:
        return GlobalSettings()
    default_repository = table.string("default_repository")
    policy = _parse_access_policy(table.table("access_policy"))
    settings = GlobalSettings(
        max_concurrent_cache_jobs=table.integer(
            "max_concurrent_cache_jobs", _GLOBAL_DEFAULTS.max_concurrent_cache_jobs, minimum=1
        ),
        immutable_tags=table.boolean("immutable_tags", _GLOBAL_DEFAULTS.immutable_tags),
        immutable_tags_exclusions=table.patterns("immutable_tags_exclusions") or (),
        max_manifest_size=table.size("max_manifest_size", _GLOBAL_DEFAULTS.max_manifest_size),
        max_blob_size=table.size("max_blob_size", None),
        enable_blob_redirect=table.boolean(
            "enable_blob_redirect", _GLOBAL_DEFAULTS.enable_blob_redirect
        ),
        default_repository=default_repository,
        access_policy=policy or AccessPolicy(),
        upstream_failure_threshold=table.integer(
            "upstream_failure_threshold", _GLOBAL_DEFAULTS.upstream_failure_threshold, minimum=1
        ),
        upstream_cooldown_secs=table.number(
            "upstream_cooldown_secs", _GLOBAL_DEFAULTS.upstream_cooldown_secs
        ),
    )
    _ignore(table, _IGNORED_GLOBAL, ignored)
    table.finish()
    return settings


def _parse_storage(table: _Table | None, ignored: list[str]) -> StorageSettings:
    if table is None:
        raise ConfigError("blob_store", None, "a [blob_store.fs] or [blob_store.s3] table")
    fs = table.table("fs")
    s3 = table.table("s3")
    table.finish()
    if fs is not None and s3 is not None:
        raise ConfigError(
            "blob_store", "fs and s3", "exactly one of [blob_store.fs], [blob_store.s3]"
        )
    if fs is not None:
        root_dir = fs.string("root_dir", required=True)
        settings_fs = FsStorageSettings(
            root_dir=Path(root_dir), sync_to_disk=fs.boolean("sync_to_disk", False)
        )
        fs.finish()
        return settings_fs
    if s3 is not None:
        endpoint = s3.string("endpoint")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(s3.key("endpoint"), endpoint, "an http:// or https:// URL")
        part_size = s3.size("multipart_part_size", 50 * 1024 * 1024)
        if part_size < 5 * 1024 * 1024:
            raise ConfigError(
                s3.key("multipart_part_size"), part_size, "at least 5MiB (S3's minimum part)"
            )
        settings_s3 = S3StorageSettings(
            bucket=s3.string("bucket", required=True),
            region=s3.string("region", "us-east-1"),
            endpoint=endpoint,
            access_key_id=s3.string("access_key_id", required=True),
            secret_key=s3.string("secret_key", required=True),
            key_prefix=s3.string("key_prefix", "").strip("/"),
            multipart_part_size=part_size,
        )
        _ignore(s3, _IGNORED_S3, ignored)
        s3.finish()
        return settings_s3
    raise ConfigError("blob_store", None, "a [blob_store.fs] or [blob_store.s3] table")


def _parse_upstream(table: _Table) -> UpstreamSettings:
    url = table.string("url", required=True)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(table.key("url"), url, "an http:// or https:// URL with a host")
    namespace_path = parts.path.strip("/")
    if namespace_path and not NAME_RE.match(namespace_path):
        raise ConfigError(
            table.key("url"), url, "a URL whose path is a valid repository name prefix"
        )
    username = table.string("username")
    password = table.string("password")
    if (username is None) != (password is None):
        raise ConfigError(table.key("username"), username, "username and password set together")
    settings = UpstreamSettings(
        url=url.rstrip("/"),
        username=username,
        password=password,
        connect_timeout_secs=table.number("connect_timeout_secs", 10.0),
        read_timeout_secs=table.number("read_timeout_secs", 60.0),
        server_ca_bundle=table.path("server_ca_bundle"),
        client_certificate=table.path("client_certificate"),
        client_private_key=table.path("client_private_key"),
        max_redirect=table.integer("max_redirect", 5, minimum=0, maximum=20),
    )
    for key in ("server_ca_bundle", "client_certificate", "client_private_key"):
        path = getattr(settings, key)
        if path is not None and not path.is_file():
            raise ConfigError(table.key(key), str(path), "a readable file")
    if (settings.client_certificate is None) != (settings.client_private_key is None):
        raise ConfigError(
            table.key("client_certificate"),
            str(settings.client_certificate),
            "client_certificate and client_private_key set together",
        )
    table.finish()
    return settings


def _parse_repositories(
    table: _Table | None, global_: GlobalSettings, ignored: list[str]
) -> dict[str, RepositorySettings]:
    repositories: dict[str, RepositorySettings] = {}
    if table is None:
        return repositories
    for name, _ in list(table.items()):
        key = table.key(f'"{name}"')
        if not NAME_RE.match(name):
            raise ConfigError(key, name, "a valid repository name (lowercase, like docker-io)")
        repo = table.table(name)
        assert repo is not None
        repo._path = key
        upstreams = tuple(_parse_upstream(u) for u in repo.tables("upstream"))
        if not upstreams:
            raise ConfigError(f"{key}.upstream", None, 'at least one [[repository."...".upstream]]')
        exclusions = repo.patterns("immutable_tags_exclusions")
        # A repository's non-empty exclusion list replaces the global one.
        if not exclusions:
            exclusions = global_.immutable_tags_exclusions
        immutable = repo.boolean("immutable_tags", None)
        policy = _parse_access_policy(repo.table("access_policy"))
        namespace = repo.string("namespace")
        repositories[name] = RepositorySettings(
            name=name,
            upstreams=upstreams,
            immutable_tags=global_.immutable_tags if immutable is None else immutable,
            immutable_tags_exclusions=exclusions,
            namespace=namespace,
            access_policy=policy or global_.access_policy,
            manifest_check_interval_secs=repo.number("manifest_check_interval", 0.0),
        )
        _ignore(repo, _IGNORED_REPOSITORY, ignored)
        repo.finish()
    table.finish()
    return repositories


def _parse_queue(table: _Table | None) -> RedisQueueSettings | None:
    if table is None:
        return None
    redis = table.table("redis")
    table.finish()
    if redis is None:
        return None
    url = redis.string("url", required=True)
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(redis.key("url"), url, "a redis://, rediss:// or unix:// URL")
    settings = RedisQueueSettings(
        url=url,
        key_prefix=redis.string("key_prefix", "simple-registry"),
        claim_timeout_secs=redis.number("claim_timeout_secs", 60.0, minimum=1.0),
        max_attempts=redis.integer("max_attempts", 5, minimum=1),
        retry_backoff_secs=redis.number("retry_backoff_secs", 1.0),
        retry_backoff_max_secs=redis.number("retry_backoff_max_secs", 60.0),
    )
    redis.finish()
    return settings


def _parse_cacher(table: _Table | None) -> CacherSettings:
    if table is None:
        return CacherSettings()
    settings = CacherSettings(
        metrics_port=table.integer("metrics_port", 9100, maximum=65535),
        metrics_bind_address=table.string("metrics_bind_address", "0.0.0.0"),
    )
    table.finish()
    return settings
