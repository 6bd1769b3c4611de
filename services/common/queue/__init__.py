"""The cache-job queue: what a job is (`jobs`), the interface (`base`), and two
implementations: in-process (`memory`, all-in-one mode) and Redis Streams (`redis`)."""

from .base import Delivery, JobQueue, QueueUnavailable
from .jobs import CacheJob, JobKind, UnsupportedJobVersion

__all__ = [
    "CacheJob",
    "Delivery",
    "JobKind",
    "JobQueue",
    "QueueUnavailable",
    "UnsupportedJobVersion",
]
