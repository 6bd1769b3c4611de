"""Simple-Registry / Angos compatibility: which of its keys a mirror accepts and ignores.

A copied Angos configuration must load. Keys that mean nothing to a pull-through mirror are
accepted and reported as ignored at start-up; a key that decides who gets in or how bytes
travel is never in these lists (it is implemented, or refused by the loader).
"""

from __future__ import annotations

from collections.abc import Iterable

from .reader import Table

IGNORED_TOP_LEVEL = ("cache", "metadata_store", "event_webhook")
IGNORED_GLOBAL = (
    "max_concurrent_requests",
    "max_concurrent_replication_jobs",
    "enable_redirect",
    "enable_manifest_redirect",
    "allow_missing_manifest_references",
    "event_webhooks",
    "namespace_walk_concurrency",
    "atime_audit_window_secs",
    "shutdown_drain_secs",
)
IGNORED_REPOSITORY = ("event_webhooks",)
IGNORED_S3 = (
    "multipart_copy_threshold",
    "multipart_copy_chunk_size",
    "multipart_copy_jobs",
    "multipart_uniform_parts",
    "max_attempts",
    "operation_timeout_secs",
    "operation_attempt_timeout_secs",
)
IGNORED_SERVER = ("query_timeout", "query_timeout_grace_period")


def ignore(table: Table, names: Iterable[str], ignored: list[str]) -> None:
    """Mark Angos keys of `table` as read, and record those present as ignored."""
    for name in names:
        if table.has(name):
            table.ignore(name)
            ignored.append(table.key(name))
