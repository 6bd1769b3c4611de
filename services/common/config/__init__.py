"""Configuration: Simple-Registry's TOML keys for a pull-through registry, plus ours.

- `settings`: the typed settings and their defaults;
- `reader`: TOML files merged, typed getters, `ConfigError`;
- `compat`: which Angos keys a mirror accepts and ignores;
- `loader`: tables into settings, every value checked.
"""

from .loader import load_settings, parse_settings
from .reader import ConfigError, merge_tables, parse_size, read_files
from .settings import (
    AccessPolicy,
    AuthSettings,
    AuthWebhook,
    BasicIdentity,
    CacherSettings,
    FsStorageSettings,
    GlobalSettings,
    OidcProvider,
    RedisQueueSettings,
    RepositorySettings,
    RetrySettings,
    S3StorageSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    TlsSettings,
    TracingSettings,
    UiSettings,
    UpstreamSettings,
    default_of,
)

__all__ = [
    "AccessPolicy",
    "AuthSettings",
    "AuthWebhook",
    "BasicIdentity",
    "CacherSettings",
    "ConfigError",
    "FsStorageSettings",
    "GlobalSettings",
    "OidcProvider",
    "RedisQueueSettings",
    "RepositorySettings",
    "RetrySettings",
    "S3StorageSettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "TracingSettings",
    "UiSettings",
    "UpstreamSettings",
    "default_of",
    "load_settings",
    "merge_tables",
    "parse_settings",
    "parse_size",
    "read_files",
]
