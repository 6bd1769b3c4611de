"""Upstream health: a circuit breaker and rate-limit back-off per upstream.

closed --(N consecutive failures)--> open --(cooldown passes)--> half-open
half-open lets exactly one probe through: its success closes the breaker, its failure opens
it again. While open, requests fail at once instead of each waiting for a timeout, and the
next upstream of the repository is tried. A 429 blocks the upstream until its Retry-After
has passed (a rate limit is not a failure: the upstream is healthy, just busy).
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_SECS = 60.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Refused(Exception):
    """The request was not sent: the breaker is open or the upstream rate-limited us."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(reason)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class UpstreamHealth:
    def __init__(self, host: str, failure_threshold: int, cooldown_secs: float):
        self.host = host
        self.failure_threshold = failure_threshold
        self.cooldown_secs = cooldown_secs
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.blocked_until = 0.0

    def refusal(self) -> Refused | None:
        """Why no request may go out now, or None when one may. A peek: takes no probe."""
        now = time.monotonic()
        if now < self.blocked_until:
            return Refused(
                "rate limited by the upstream",
                retry_after=self.blocked_until - now,
                rate_limited=True,
            )
        if self.state is BreakerState.OPEN and now - self._opened_at < self.cooldown_secs:
            return Refused(
                "upstream marked unhealthy (circuit open)",
                retry_after=self.cooldown_secs - (now - self._opened_at),
            )
        if self.state is not BreakerState.CLOSED and self._probe_in_flight:
            return Refused("upstream being probed after failures (circuit half-open)")
        return None

    def accepting(self) -> bool:
        return self.refusal() is None

    def before_request(self) -> bool:
        """Raise Refused when no request may go out now; True when this one is the probe."""
        refused = self.refusal()
        if refused is not None:
            raise refused
        if self.state is BreakerState.CLOSED:
            return False
        self.state = BreakerState.HALF_OPEN
        self._probe_in_flight = True
        return True

    def succeeded(self, probe: bool) -> None:
        if probe:
            self._probe_in_flight = False
        if self.state is not BreakerState.CLOSED:
            log.info("upstream healthy again upstream=%s (circuit closed)", self.host)
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0

    def failed(self, probe: bool, reason: str) -> None:
        if probe:
            self._probe_in_flight = False
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            if self.state is BreakerState.CLOSED:
                log.warning(
                    "upstream unhealthy upstream=%s after %d failures (last: %s); "
                    "skipping it for %.0fs (circuit open)",
                    self.host,
                    self.consecutive_failures,
                    reason,
                    self.cooldown_secs,
                )
            self.state = BreakerState.OPEN
            self._opened_at = time.monotonic()

    def rate_limited(self, probe: bool, retry_after: float | None) -> None:
        if probe:
            self._probe_in_flight = False
        delay = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_SECS
        self.blocked_until = max(self.blocked_until, time.monotonic() + delay)
        log.warning(
            "upstream rate limit upstream=%s: no requests for %.0fs (Retry-After)", self.host, delay
        )
