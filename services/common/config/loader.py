"""Loading: TOML tables into settings types, every value checked.

`load_settings(paths)` merges the files (later over earlier, tables recursively) and returns
frozen `Settings`. A bad value raises `ConfigError` naming the dotted key; an unknown key is
collected in `Settings.unknown_keys` so that start-up reports it by its full dotted name.
Defaults come from the settings types (`default_of`), never from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..oci import NAME_RE
from . import compat
from .access import (
    check_webhook_reference,
    parse_access_policy,
    parse_auth,
    parse_tls,
    parse_trusted_proxies,
)
from .reader import ConfigError, Table, read_files
from .retention import check_pull_times, parse_eviction, parse_retention_policy
from .settings import (
    AccessPolicy,
    AuthSettings,
    CacherSettings,
    FsStorageSettings,
    GlobalSettings,
    ObservabilitySettings,
    RedisQueueSettings,
    RepositorySettings,
    S3StorageSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    TracingSettings,
    UiSettings,
    UpstreamSettings,
    default_of,
)


def load_settings(paths: Iterable[Path]) -> Settings:
    return parse_settings(read_files(paths))


def parse_settings(data: Mapping[str, Any]) -> Settings:
    unknown: list[str] = []
    ignored: list[str] = []
    root = Table(data, "", unknown)

    auth = parse_auth(root.table("auth"))
    server = _parse_server(root.table("server"), ignored)
    global_ = _parse_global(root.table("global"), ignored)
    storage = _parse_storage(root.table("blob_store"), ignored)
    repositories = _parse_repositories(root.table("repository"), global_, ignored)
    queue = _parse_queue(root.table("queue"))
    cacher = _parse_cacher(root.table("cacher"))
    ui = _parse_ui(root.table("ui"))
    eviction = parse_eviction(root.table("eviction"), global_.gc_grace_secs)
    observability = _parse_observability(root.table("observability"))
    compat.ignore(root, compat.IGNORED_TOP_LEVEL, ignored)
    root.finish()
    _check_cross_references(global_, repositories, auth)
    check_pull_times(global_, repositories)
    return Settings(
        server=server,
        global_=global_,
        storage=storage,
        repositories=repositories,
        queue=queue,
        cacher=cacher,
        ui=ui,
        auth=auth,
        eviction=eviction,
        observability=observability,
        unknown_keys=tuple(unknown),
        ignored_keys=tuple(ignored),
    )


def _check_cross_references(
    global_: GlobalSettings, repositories: Mapping[str, RepositorySettings], auth: AuthSettings
) -> None:
    check_webhook_reference("global.authorization_webhook", global_.authorization_webhook, auth)
    for repository in repositories.values():
        check_webhook_reference(
            f'repository."{repository.name}".authorization_webhook',
            repository.authorization_webhook,
            auth,
        )
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
        tls=parse_tls(table.table("tls")),
        max_connections=table.integer(
            "max_connections", default_of(d, "max_connections"), minimum=1
        ),
        write_timeout_secs=table.number(
            "write_timeout_secs", default_of(d, "write_timeout_secs"), minimum=1.0
        ),
    )
    compat.ignore(table, compat.IGNORED_SERVER, ignored)
    table.finish()
    return settings


def _parse_global(table: Table | None, ignored: list[str]) -> GlobalSettings:
    if table is None:
        return GlobalSettings()
    d = GlobalSettings
    policy = parse_access_policy(table.table("access_policy"))
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
        trusted_proxies=parse_trusted_proxies(table),
        tag_list=_tag_list(table, default_of(d, "tag_list")),
        authorization_webhook=table.string("authorization_webhook") or None,
        upstream_failure_threshold=table.integer(
            "upstream_failure_threshold", default_of(d, "upstream_failure_threshold"), minimum=1
        ),
        upstream_cooldown_secs=table.number(
            "upstream_cooldown_secs", default_of(d, "upstream_cooldown_secs")
        ),
        upstream_first_cooldown_secs=table.number(
            "upstream_first_cooldown_secs", default_of(d, "upstream_first_cooldown_secs")
        ),
        allowed_redirect_networks=_networks(table, "allowed_redirect_networks"),
        update_pull_time=table.boolean("update_pull_time", default_of(d, "update_pull_time")),
        retention_policy=parse_retention_policy(table.table("retention_policy")),
        gc_grace_secs=table.number("gc_grace_secs", None),
    )
    compat.ignore(table, compat.IGNORED_GLOBAL, ignored)
    table.finish()
    return settings


def _tag_list(table: Table, default: str) -> str:
    value = table.string("tag_list", default)
    if value not in ("cache", "upstream"):
        raise ConfigError(table.key("tag_list"), value, '"cache" or "upstream"')
    return str(value)


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
    if "@" in parts.netloc:
        # Never echo it: the value holds a password.
        raise ConfigError(
            table.key("url"),
            _without_credentials(url),
            "a URL without credentials in it: use username/password",
        )
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
        request_timeout_secs=table.number(
            "request_timeout_secs", default_of(d, "request_timeout_secs"), minimum=1.0
        ),
        # At most 48 of the 64 pooled connections per host: the rest stay free for
        # manifests, HEADs and tokens.
        max_concurrent_downloads=table.integer(
            "max_concurrent_downloads",
            default_of(d, "max_concurrent_downloads"),
            minimum=1,
            maximum=48,
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
    webhook = repo.string("authorization_webhook")
    settings = RepositorySettings(
        name=name,
        upstreams=upstreams,
        immutable_tags=global_.immutable_tags if immutable is None else immutable,
        immutable_tags_exclusions=exclusions,
        namespace=repo.string("namespace"),
        access_policy=parse_access_policy(repo.table("access_policy")),
        # Its own webhook, else the global one; "" turns the webhook off here.
        authorization_webhook=(global_.authorization_webhook if webhook is None else webhook)
        or None,
        tag_list=_tag_list(repo, global_.tag_list),
        manifest_check_interval_secs=repo.number(
            "manifest_check_interval",
            default_of(RepositorySettings, "manifest_check_interval_secs"),
        ),
        retention_policy=parse_retention_policy(repo.table("retention_policy")),
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
        raise ConfigError(
            redis.key("url"), _without_credentials(url), "a redis://, rediss:// or unix:// URL"
        )
    settings = RedisQueueSettings(
        url=url,
        key_prefix=redis.string("key_prefix", default_of(d, "key_prefix")),
        claim_timeout_secs=redis.number(
            "claim_timeout_secs", default_of(d, "claim_timeout_secs"), minimum=1.0
        ),
        reconnect_backoff_max_secs=redis.number(
            "reconnect_backoff_max_secs", default_of(d, "reconnect_backoff_max_secs"), minimum=0.5
        ),
        max_attempts=redis.integer("max_attempts", default_of(d, "max_attempts"), minimum=1),
        retry_backoff_secs=redis.number("retry_backoff_secs", default_of(d, "retry_backoff_secs")),
        retry_backoff_max_secs=redis.number(
            "retry_backoff_max_secs", default_of(d, "retry_backoff_max_secs")
        ),
        job_signing_key=_job_signing_key(redis),
    )
    redis.finish()
    return settings


# Shorter keys are guessable; 32 random bytes (`openssl rand -hex 32`) is the usual choice.
MIN_JOB_KEY_BYTES = 16


def _job_signing_key(redis: Table) -> bytes | None:
    """`job_signing_key` (text) or `job_signing_key_file` (a secret file's contents)."""
    text = redis.string("job_signing_key")
    path = redis.path("job_signing_key_file")
    if text is not None and path is not None:
        raise ConfigError(
            redis.key("job_signing_key_file"), str(path), "either it or job_signing_key, not both"
        )
    if path is not None:
        try:
            key = path.read_bytes().strip()
        except OSError as error:
            raise ConfigError(
                redis.key("job_signing_key_file"), str(path), f"a readable file ({error})"
            ) from None
        if len(key) < MIN_JOB_KEY_BYTES:
            raise ConfigError(
                redis.key("job_signing_key_file"),
                str(path),
                f"a file holding a key of at least {MIN_JOB_KEY_BYTES} bytes",
            )
        return key
    if text is not None:
        if len(text.encode()) < MIN_JOB_KEY_BYTES:
            raise ConfigError(
                redis.key("job_signing_key"),
                "<hidden>",
                f"a key of at least {MIN_JOB_KEY_BYTES} characters",
            )
        return text.encode()
    return None


def _without_credentials(url: str) -> str:
    """A URL as it may be shown: user and password replaced."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _networks(table: Table, name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    value = table.raw(name)
    if value is None:
        return tuple(default_of(GlobalSettings, name))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(table.key(name), value, 'a list of CIDRs, like ["10.20.0.0/16"]')
    networks = []
    for index, text in enumerate(value):
        try:
            networks.append(ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{table.key(name)}[{index}]", text, "a CIDR") from None
    return tuple(networks)


def _parse_observability(table: Table | None) -> ObservabilitySettings:
    if table is None:
        return ObservabilitySettings()
    tracing_table = table.table("tracing")
    tracing = None
    if tracing_table is not None:
        endpoint = tracing_table.string("endpoint", required=True)
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(
                tracing_table.key("endpoint"), endpoint, "an http(s):// OTLP/HTTP collector URL"
            )
        if not tracing_table.has("sampling_rate"):
            raise ConfigError(
                tracing_table.key("sampling_rate"), None, "a number from 0.0 to 1.0 (required)"
            )
        rate = tracing_table.number("sampling_rate", 0.0)
        if rate > 1.0:
            raise ConfigError(tracing_table.key("sampling_rate"), rate, "a number from 0.0 to 1.0")
        tracing = TracingSettings(endpoint, rate)
        tracing_table.finish()
    logging_table = table.table("logging")
    log_format = default_of(ObservabilitySettings, "log_format")
    if logging_table is not None:
        log_format = logging_table.string("format", log_format)
        if log_format not in ("text", "json"):
            raise ConfigError(logging_table.key("format"), log_format, '"text" or "json"')
        logging_table.finish()
    table.finish()
    return ObservabilitySettings(tracing=tracing, log_format=log_format)


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


def _parse_ui(table: Table | None) -> UiSettings:
    if table is None:
        return UiSettings()
    d = UiSettings
    if table.has("oidc"):
        raise ConfigError(
            table.key("oidc"),
            "[ui.oidc]",
            "no [ui.oidc] table: the web UI signs in with the registry's Basic credentials only",
        )
    name = table.string("name", default_of(d, "name"))
    if not name.strip() or len(name) > 100:
        raise ConfigError(table.key("name"), name, "a non-empty name of at most 100 characters")
    settings = UiSettings(
        enabled=table.boolean("enabled", default_of(d, "enabled")),
        name=name,
        stats_interval_secs=table.number(
            "stats_interval_secs", default_of(d, "stats_interval_secs"), minimum=0.1
        ),
    )
    table.finish()
    return settings
