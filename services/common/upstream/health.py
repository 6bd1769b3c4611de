"""Upstream health: a circuit breaker and rate-limit back-off per upstream.

    closed --(N consecutive "down" failures)--> open --(cooldown passes)--> half-open
    half-open --(the probe gets any answer)--> closed
    half-open --(the probe finds it down)--> open, with the cooldown doubled

While open, requests fail at once instead of each waiting for a timeout, and the next
upstream of the repository is tried. The first cooldown is short (`first_cooldown_secs`)
so that a blip of a second costs about a second; each failed probe doubles it, up to
`cooldown_secs`, so that a long outage costs one probe per `cooldown_secs`. Any answer
closes the breaker, also from a request that was sent before it opened.

Only "the upstream is down" counts as a failure (`UpstreamDown`: refused, reset, timed out,
5xx). A 404, a 401, corrupt bytes or a redirect we refuse come from an upstream that
answered; a request abandoned by its client (cancelled) says nothing either way, and frees
the probe slot for the next request.

A 429 blocks the upstream until its Retry-After has passed (a rate limit is not a failure:
the upstream is healthy, just busy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
    def __init__(
        self,
        host: str,
        failure_threshold: int,
        cooldown_secs: float,
        first_cooldown_secs: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.host = host
        self.failure_threshold = failure_threshold
        self.cooldown_secs = cooldown_secs
        self.first_cooldown_secs = min(
            cooldown_secs, cooldown_secs if first_cooldown_secs is None else first_cooldown_secs
        )
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.current_cooldown = self.first_cooldown_secs
        self._open_until = 0.0
        self._probe_in_flight = False
        self.blocked_until = 0.0
        # The last failure, for operators (the web UI): its text and wall-clock time.
        self.last_error: tuple[str, float] | None = None

    def refusal(self) -> Refused | None:
        """Why no request may go out now, or None when one may. A peek: takes no probe."""
        now = self._clock()
        if now < self.blocked_until:
            return Refused(
                "rate limited by the upstream",
                retry_after=self.blocked_until - now,
                rate_limited=True,
            )
        if self.state is BreakerState.OPEN and now < self._open_until:
            return Refused(
                "upstream marked unhealthy (circuit open)", retry_after=self._open_until - now
            )
        if self.state is BreakerState.HALF_OPEN and self._probe_in_flight:
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
        """The upstream answered (whatever the status, other than 429 and 5xx)."""
        if probe:
            self._probe_in_flight = False
        if self.state is not BreakerState.CLOSED:
            log.info("upstream healthy again upstream=%s (circuit closed)", self.host)
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.current_cooldown = self.first_cooldown_secs

    def failed(self, probe: bool, reason: str) -> None:
        """The upstream is down (`UpstreamDown`)."""
        self.last_error = (reason, time.time())
        if probe:
            self._probe_in_flight = False
            self.current_cooldown = min(self.current_cooldown * 2, self.cooldown_secs)
            self._open(reason)
            return
        self.consecutive_failures += 1
        if (
            self.state is BreakerState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            log.warning(
                "upstream unhealthy upstream=%s after %d failures (last: %s); "
                "skipping it, next probe in %.1fs (circuit open)",
                self.host,
                self.consecutive_failures,
                reason,
                self.current_cooldown,
            )
            self._open(reason)
        # Open or half-open: a request sent before the breaker opened failed late; the
        # probe decides.

    def _open(self, reason: str) -> None:
        self.state = BreakerState.OPEN
        self._open_until = self._clock() + self.current_cooldown
        log.debug(
            "upstream still down upstream=%s (%s); next probe in %.1fs",
            self.host,
            reason,
            self.current_cooldown,
        )

    def abandoned(self, probe: bool) -> None:
        """The request ended without an answer either way (its client went away): the
        next request may probe at once."""
        if probe and self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self.state = BreakerState.OPEN
            self._open_until = self._clock()

    def rate_limited(self, probe: bool, retry_after: float | None) -> None:
        if probe:
            # It answered: up, but busy.
            self.succeeded(probe)
        delay = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_SECS
        self.blocked_until = max(self.blocked_until, self._clock() + delay)
        log.warning(
            "upstream rate limit upstream=%s: no requests for %.0fs (Retry-After)", self.host, delay
        )
