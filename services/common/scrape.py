"""`/metrics` of a frontend or a cacher: the gauges read from state others keep at scrape
time (the queue's depth and dead letters, each upstream's breaker), then the text.

A queue that cannot be read leaves its gauges as they were (`registry_caching_degraded`
says the queue is down); the breaker gauges are rebuilt on every scrape, so an upstream
removed by a live reload disappears from them.
"""

from __future__ import annotations

import asyncio
import contextlib

from .runtime import Runtime
from .upstream.health import BreakerState

QUEUE_TIMEOUT_SECS = 1.0

# The state a host is reported in when several of its upstream URLs disagree: the worst.
_SEVERITY = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


async def render_metrics(runtime: Runtime) -> bytes:
    metrics = runtime.metrics
    with contextlib.suppress(Exception):
        metrics.queue_depth.set(await asyncio.wait_for(runtime.queue.depth(), QUEUE_TIMEOUT_SECS))
    with contextlib.suppress(Exception):
        metrics.dead_letters.set(
            await asyncio.wait_for(runtime.queue.dead_letter_count(), QUEUE_TIMEOUT_SECS)
        )
    states = breaker_states(runtime)
    # No await from here to the render: a scrape never sees the gauge half rebuilt.
    metrics.breaker_state.clear()
    for host, current in states.items():
        for state in BreakerState:
            metrics.breaker_state.labels(host, str(state)).set(1 if state is current else 0)
    return metrics.render()


def breaker_states(runtime: Runtime) -> dict[str, BreakerState]:
    """Each configured upstream host's breaker state, the worst of its URLs'."""
    states: dict[str, BreakerState] = {}
    for repository in runtime.settings.repositories:
        for client in runtime.upstreams.clients(repository):
            state = client.health.state
            known = states.get(client.host)
            if known is None or _SEVERITY[state] > _SEVERITY[known]:
                states[client.host] = state
    return states
