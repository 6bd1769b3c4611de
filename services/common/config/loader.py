"""Loading: TOML tables into settings types, every value checked.

`load_settings(paths)` merges the files (later over earlier, tables recursively) and returns
frozen `Settings`. A bad value raises `ConfigError` naming the dotted key; an unknown key is
collected in `Settings.unknown_keys` so that start-up reports it by its full dotted name.
Defaults come from the settings types (`default_of`), never from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..oci import NAME_RE
from . import compat
from .reader import ConfigError, Table, read_files
from .settings import (
    AccessPolicy,
    CacherSettings,
    FsStorageSettings,
    GlobalSettings,
    RedisQueueSettings,
    RepositorySettings,
    S3StorageSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    UpstreamSettings,
    default_of,
)


def load_settings(paths: Iterable[Path]) -> Settings:
    return parse_settings(read_files(paths))


def parse_settings(data: Mapping[str, Any]) -> Settings:
    unknown: list[str] = []
    ignored: list[str] = []
    root = Table(data, "", unknown)

    server = _parse_server(root.table("server"), ignored)
    global_ = _parse_global(root.table("global"), ignored)
    storage = _parse_storage(root.table("blob_store"), ignored)
    repositories = _parse_repositories(root.table("repository"), global_, ignored)
    queue = _parse_queue(root.table("queue"))
    cacher = _parse_cacher(root.table("cacher"))
    compat.ignore(root, compat.IGNORED_TOP_LEVEL, ignored)
    root.finish()
    _check_cross_references(global_, repositories)
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


def _check_cross_references(
    global_: GlobalSettings, repositories: Mapping[str, RepositorySettings]
) -> None:
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
                "a namespace no other repository uses "
                f'(also used by "{namespaces[repository.namespace]}")',
            )
        namespaces[repository.namespace] = repository.name


def _parse_server(table: Table | None, ignored: list[str]) -> ServerSettings:
    if table is None:
        return ServerSettings()
    d = ServerSettings
    settings = ServerSettings(
        bind_address=table.string("bind_address", default_of(d, "bind_address")),
        port=table.integer("port", default_of(d, "port"), minimum=0, maximum=65535),
        drain_timeout_secs=table.number("drain_timeout_secs", default_of(d, "drain_timeout_secs")),
        workers=table.integer("workers", default_of(d, "workers"), minimum=1, maximum=64),
    )
    compat.ignore(table, compat.IGNORED_SERVER, ignored)
    table.finish()
    return settings


def _parse_access_policy(table: Table | None) -> AccessPolicy | None:
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


def _parse_global(table: Table | None, ignored: list[str]) -> GlobalSettings:
    if table is None:
        return GlobalSettings()
    d = GlobalSettings
    policy = _parse_access_policy(table.table("access_policy"))
    settings = GlobalSettings(
        max_concurrent_cache_jobs=table.integer(
            "max_concurrent_cache_jobs", default_of(d, "max_concurrent_cache_jobs"), minimum=1
        ),
        immutable_tags=table.boolean("immutable_tags", default_of(d, "immutable_tags")),
        immutable_tags_exclusions=table.patterns("immutable_tags_exclusions")
        or default_of(d, "immutable_tags_exclusions"),
        max_manifest_size=table.size("max_manifest_size", default_of(d, "max_manifest_size")),
        max_blob_size=table.size("max_blob_size", default_of(d, "max_blob_size")),
        enable_blob_redirect=table.boolean(
            "enable_blob_redirect", default_of(d, "enable_blob_redirect")
        ),
        default_repository=table.string("default_repository"),
        access_policy=policy or AccessPolicy(),
        upstream_failure_threshold=table.integer(
            "upstream_failure_threshold", default_of(d, "upstream_failure_threshold"), minimum=1
        ),
        upstream_cooldown_secs=table.number(
            "upstream_cooldown_secs", default_of(d, "upstream_cooldown_secs")
        ),
    )
    compat.ignore(table, compat.IGNORED_GLOBAL, ignored)
    table.finish()
    return settings


def _parse_storage(table: Table | None, ignored: list[str]) -> StorageSettings:
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
        return _parse_fs(fs)
    if s3 is not None:
        return _parse_s3(s3, ignored)
    raise ConfigError("blob_store", None, "a [blob_store.fs] or [blob_store.s3] table")


def _parse_fs(fs: Table) -> FsStorageSettings:
    settings = FsStorageSettings(
        root_dir=Path(fs.string("root_dir", required=True)),
        sync_to_disk=fs.boolean("sync_to_disk", default_of(FsStorageSettings, "sync_to_disk")),
    )
    fs.finish()
    return settings


def _parse_s3(s3: Table, ignored: list[str]) -> S3StorageSettings:
    d = S3StorageSettings
    endpoint = s3.string("endpoint")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(s3.key("endpoint"), endpoint, "an http:// or https:// URL")
    part_size = s3.size("multipart_part_size", default_of(d, "multipart_part_size"))
    if part_size < 5 * 1024 * 1024:
        raise ConfigError(
            s3.key("multipart_part_size"), part_size, "at least 5MiB (S3's minimum part)"
        )
    settings = S3StorageSettings(
        bucket=s3.string("bucket", required=True),
        region=s3.string("region", "us-east-1"),
        endpoint=endpoint,
        access_key_id=s3.string("access_key_id", required=True),
        secret_key=s3.string("secret_key", required=True),
        key_prefix=s3.string("key_prefix", default_of(d, "key_prefix")).strip("/"),
        multipart_part_size=part_size,
    )
    compat.ignore(s3, compat.IGNORED_S3, ignored)
    s3.finish()
    return settings


def _parse_upstream(table: Table) -> UpstreamSettings:
    d = UpstreamSettings
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
        connect_timeout_secs=table.number(
            "connect_timeout_secs", default_of(d, "connect_timeout_secs")
        ),
        read_timeout_secs=table.number("read_timeout_secs", default_of(d, "read_timeout_secs")),
        server_ca_bundle=table.path("server_ca_bundle"),
        client_certificate=table.path("client_certificate"),
        client_private_key=table.path("client_private_key"),
        max_redirect=table.integer(
            "max_redirect", default_of(d, "max_redirect"), minimum=0, maximum=20
        ),
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
    table: Table | None, global_: GlobalSettings, ignored: list[str]
) -> dict[str, RepositorySettings]:
    repositories: dict[str, RepositorySettings] = {}
    if table is None:
        return repositories
    for name, _ in list(table.items()):
        key = table.key(f'"{name}"')
        if not NAME_RE.match(name):
            raise ConfigError(key, name, "a valid repository name (lowercase, like docker-io)")
        repo = table.table(name, display=key)
        assert repo is not None
        repositories[name] = _parse_repository(name, repo, global_, ignored)
    table.finish()
    return repositories


def _parse_repository(
    name: str, repo: Table, global_: GlobalSettings, ignored: list[str]
) -> RepositorySettings:
    upstreams = tuple(_parse_upstream(u) for u in repo.tables("upstream"))
    if not upstreams:
        raise ConfigError(
            f"{repo.key('upstream')}", None, 'at least one [[repository."...".upstream]]'
        )
    exclusions = repo.patterns("immutable_tags_exclusions")
    # A repository's non-empty exclusion list replaces the global one.
    if not exclusions:
        exclusions = global_.immutable_tags_exclusions
    immutable = repo.boolean("immutable_tags", None)
    policy = _parse_access_policy(repo.table("access_policy"))
    settings = RepositorySettings(
        name=name,
        upstreams=upstreams,
        immutable_tags=global_.immutable_tags if immutable is None else immutable,
        immutable_tags_exclusions=exclusions,
        namespace=repo.string("namespace"),
        access_policy=policy or global_.access_policy,
        manifest_check_interval_secs=repo.number(
            "manifest_check_interval",
            default_of(RepositorySettings, "manifest_check_interval_secs"),
        ),
    )
    compat.ignore(repo, compat.IGNORED_REPOSITORY, ignored)
    repo.finish()
    return settings


def _parse_queue(table: Table | None) -> RedisQueueSettings | None:
    if table is None:
        return None
    redis = table.table("redis")
    table.finish()
    if redis is None:
        return None
    d = RedisQueueSettings
    url = redis.string("url", required=True)
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(redis.key("url"), url, "a redis://, rediss:// or unix:// URL")
    settings = RedisQueueSettings(
        url=url,
        key_prefix=redis.string("key_prefix", default_of(d, "key_prefix")),
        claim_timeout_secs=redis.number(
            "claim_timeout_secs", default_of(d, "claim_timeout_secs"), minimum=1.0
        ),
        max_attempts=redis.integer("max_attempts", default_of(d, "max_attempts"), minimum=1),
        retry_backoff_secs=redis.number("retry_backoff_secs", default_of(d, "retry_backoff_secs")),
        retry_backoff_max_secs=redis.number(
            "retry_backoff_max_secs", default_of(d, "retry_backoff_max_secs")
        ),
    )
    redis.finish()
    return settings


def _parse_cacher(table: Table | None) -> CacherSettings:
    if table is None:
        return CacherSettings()
    d = CacherSettings
    settings = CacherSettings(
        metrics_port=table.integer("metrics_port", default_of(d, "metrics_port"), maximum=65535),
        metrics_bind_address=table.string(
            "metrics_bind_address", default_of(d, "metrics_bind_address")
        ),
    )
    table.finish()
    return settings
