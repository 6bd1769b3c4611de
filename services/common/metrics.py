"""Prometheus metrics. Label values are bounded: routes, methods, statuses, kinds, outcomes
and configured upstream hosts — never a repository name, a tag or a digest."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


class Metrics:
    """One set of metrics per process, in its own registry (tests run several apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "registry_http_requests_total",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "registry_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the body)",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "registry_cache_lookups_total",
            "Manifest and blob lookups by result (hit, miss, stale, revalidated)",
            ["kind", "result"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "registry_upstream_requests_total",
            "Requests to upstream registries",
            ["upstream", "method", "status"],
            registry=r,
        )
        self.upstream_bytes = Counter(
            "registry_upstream_bytes_total",
            "Bytes received from upstream registries",
            ["upstream"],
            registry=r,
        )
        self.bytes_served = Counter(
            "registry_bytes_served_total",
            "Blob bytes sent to clients, by source (cache, upstream)",
            ["source"],
            registry=r,
        )
        self.streams_in_flight = Gauge(
            "registry_upstream_streams_in_flight",
            "Clients being sent a blob that is still arriving from its upstream",
            registry=r,
        )
        self.queue_depth = Gauge(
            "registry_cache_queue_depth", "Cache jobs waiting or in progress", registry=r
        )
        self.dead_letters = Gauge(
            "registry_cache_dead_letters",
            "Cache jobs in the dead-letter stream (given up after the last attempt)",
            registry=r,
        )
        self.breaker_state = Gauge(
            "registry_upstream_breaker_state",
            "1 for the circuit-breaker state each upstream host is in now (closed, open, "
            "half-open), 0 for the others",
            ["upstream", "state"],
            registry=r,
        )
        self.jobs = Counter(
            "registry_cache_jobs_total",
            "Cache jobs finished by outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "registry_cache_job_duration_seconds",
            "Time to run one cache job",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.caching_degraded = Gauge(
            "registry_caching_degraded", "1 while cache jobs cannot be enqueued", registry=r
        )
        self.ratelimit_remaining = Gauge(
            "registry_upstream_ratelimit_remaining",
            "The upstream's last reported ratelimit-remaining",
            ["upstream"],
            registry=r,
        )

        self.memory_entries = Gauge(
            "registry_memory_entries",
            "Entries in the frontend's bounded memory (manifests, tags, layer links)",
            registry=r,
        )
        self.memory_bytes = Gauge(
            "registry_memory_bytes", "Approximate bytes held by the frontend's memory", registry=r
        )
        self.memory_evictions = Counter(
            "registry_memory_evictions_total",
            "Entries evicted from the frontend's memory to stay within its bound",
            registry=r,
        )

        self.access_decisions = Counter(
            "registry_access_decisions_total",
            "Access-policy decisions by action and result (allow, deny)",
            ["action", "result"],
            registry=r,
        )
        self.auth_attempts = Counter(
            "registry_auth_attempts_total",
            "Credentials checked, by method (basic, oidc, unsupported) and result",
            ["method", "result"],
            registry=r,
        )
        self.password_verifications = Counter(
            "registry_password_verifications_total",
            "Argon2 password checks run (a verified header is remembered for a while)",
            ["result"],
            registry=r,
        )
        self.webhook_decisions = Counter(
            "registry_authorization_webhook_requests_total",
            "Authorization webhook answers by webhook and result",
            ["webhook", "result"],
            registry=r,
        )
        self._lifecycle_metrics(r)

    def _lifecycle_metrics(self, r: CollectorRegistry) -> None:
        """The cache lifecycle: usage, what prune/scrub deleted and why, their runs."""
        self.storage_bytes = Gauge(
            "registry_storage_bytes",
            "Bytes of committed content (blobs; manifests are blobs too), as last measured",
            registry=r,
        )
        self.storage_objects = Gauge(
            "registry_storage_objects",
            "Stored objects by kind (blob, manifest, tag), as last measured",
            ["kind"],
            registry=r,
        )
        self.storage_budget_bytes = Gauge(
            "registry_storage_budget_bytes", "[eviction] max_size (0: no budget)", registry=r
        )
        self.lifecycle_deleted_bytes = Counter(
            "registry_lifecycle_deleted_bytes_total",
            "Blob bytes deleted by reason (retention, budget, delete, gc, corrupt)",
            ["reason"],
            registry=r,
        )
        self.lifecycle_deleted_blobs = Counter(
            "registry_lifecycle_deleted_blobs_total",
            "Blobs deleted by reason (retention, budget, delete, gc, corrupt)",
            ["reason"],
            registry=r,
        )
        self.lifecycle_last_run = Gauge(
            "registry_lifecycle_last_run_timestamp_seconds",
            "When the last prune or scrub of this process finished (unix time)",
            ["task"],
            registry=r,
        )
        self.lifecycle_duration = Gauge(
            "registry_lifecycle_last_run_duration_seconds",
            "How long the last prune or scrub of this process took",
            ["task"],
            registry=r,
        )
        self.lifecycle_errors = Counter(
            "registry_lifecycle_errors_total",
            "Lifecycle runs that failed, or found what stops blob deletion, by task",
            ["task"],
            registry=r,
        )
        self.memory_invalidations = Counter(
            "registry_memory_invalidations_total",
            "Times this frontend forgot its memory because content was about to be deleted",
            registry=r,
        )
        self.pull_times_written = Counter(
            "registry_pull_times_written_total",
            "Pull-time records written (update_pull_time), by result (ok, failed)",
            ["result"],
            registry=r,
        )

        self.upstream_failures = Counter(
            "registry_upstream_failures_total",
            "Failed upstream requests by upstream host and cause (dns, connect_refused, "
            "connect_timeout, read_timeout, tls, http_<status>, digest_mismatch, size_limit, "
            "breaker_open, rate_limited)",
            ["upstream", "cause"],
            registry=r,
        )
        self.config_info = Gauge(
            "registry_config_info",
            "1 for the hash of the configuration in force (its files, merged)",
            ["hash"],
            registry=r,
        )
        self.config_reload_time = Gauge(
            "registry_config_last_reload_timestamp_seconds",
            "When the configuration in force was loaded",
            registry=r,
        )
        self.config_reloads = Counter(
            "registry_config_reloads_total",
            "Configuration reloads by result (applied, rejected, failed)",
            ["result"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
