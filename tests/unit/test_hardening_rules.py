"""The pure rules behind the hardening of issue 12: where redirects and realms may point
(SSRF), where credentials may go, the circuit breaker's timing, the bounded token cache,
sealed cache jobs, and the path order the catalog pages in."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import msgpack
import pytest
from simple_registry.common.queue.jobs import (
    CacheJob,
    JobKind,
    JobRejected,
    JobSigner,
    UnsupportedJobVersion,
)
from simple_registry.common.upstream.auth import TokenCache
from simple_registry.common.upstream.client import origin_of
from simple_registry.common.upstream.health import BreakerState, Refused, UpstreamHealth
from simple_registry.common.upstream.targets import range_of, refusal

ip = ipaddress.ip_address
PUBLIC_UPSTREAM = [ip("34.226.69.105")]  # registry-1.docker.io, once


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast or reserved"),
    ],
)
def test_a_redirect_from_a_public_upstream_into_a_special_range_is_refused(
    target: str, kind: str
) -> None:
    assert range_of(ip(target)) == kind
    reason = refusal(ip(target), PUBLIC_UPSTREAM)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("target", ["104.16.0.1", "172.32.0.1", "2606:4700::1", "8.8.8.8"])
def test_public_targets_are_followed(target: str) -> None:
    assert range_of(ip(target)) is None
    assert refusal(ip(target), PUBLIC_UPSTREAM) is None


def test_an_upstream_in_a_private_range_may_redirect_within_that_kind_of_range_only() -> None:
    private_upstream = [ip("10.0.0.5")]
    assert refusal(ip("10.9.9.9"), private_upstream) is None
    assert refusal(ip("192.168.3.4"), private_upstream) is None  # private too
    assert refusal(ip("127.0.0.1"), private_upstream) is not None  # loopback is another kind
    assert refusal(ip("169.254.169.254"), private_upstream) is not None


def test_a_loopback_upstream_may_redirect_to_loopback_but_never_to_the_metadata_service() -> None:
    loopback = [ip("127.0.0.1")]
    assert refusal(ip("127.0.0.2"), loopback) is None
    assert refusal(ip("::1"), loopback) is None
    assert refusal(ip("169.254.169.254"), [ip("169.254.10.10")]) is not None


def test_allowed_networks_open_exactly_what_they_list() -> None:
    allowed = [ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("169.254.169.254/32")]
    assert refusal(ip("10.20.1.1"), PUBLIC_UPSTREAM, allowed) is None
    assert refusal(ip("10.21.1.1"), PUBLIC_UPSTREAM, allowed) is not None
    assert refusal(ip("169.254.169.254"), PUBLIC_UPSTREAM, allowed) is None


def test_credentials_follow_scheme_host_and_port_not_just_the_host() -> None:
    assert origin_of("https://reg.example") == origin_of("https://reg.example:443/v2/x")
    assert origin_of("https://reg.example") != origin_of("http://reg.example")  # https -> http
    assert origin_of("https://reg.example") != origin_of("https://reg.example:8443")
    assert origin_of("https://Reg.Example") == origin_of("https://reg.example")
    assert origin_of("https://reg.example") != origin_of("https://cdn.reg.example")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock) -> UpstreamHealth:
    return UpstreamHealth("up", 3, 30.0, 0.5, clock=clock)


def open_it(health: UpstreamHealth) -> None:
    for _ in range(3):
        health.failed(health.before_request(), "refused")


def test_a_blip_opens_the_breaker_for_half_a_second_and_a_success_closes_it() -> None:
    clock = FakeClock()
    health = breaker(clock)
    open_it(health)
    assert health.state is BreakerState.OPEN
    refused = health.refusal()
    assert refused is not None and refused.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    probe = health.before_request()
    assert probe is True
    assert health.refusal() is not None  # one probe at a time
    health.succeeded(probe)
    assert health.state is BreakerState.CLOSED and health.accepting()


def test_each_failed_probe_doubles_the_wait_up_to_the_cooldown_and_success_resets_it() -> None:
    clock = FakeClock()
    health = breaker(clock)
    open_it(health)
    waits = []
    for _ in range(8):
        refused = health.refusal()
        assert isinstance(refused, Refused) and refused.retry_after is not None
        waits.append(round(refused.retry_after, 3))
        clock.now += refused.retry_after
        health.failed(health.before_request(), "still down")
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    clock.now += 30.0
    health.succeeded(health.before_request())
    open_it(health)
    refused = health.refusal()
    assert refused is not None and refused.retry_after == pytest.approx(0.5)


def test_a_request_that_succeeds_while_the_breaker_is_open_closes_it() -> None:
    clock = FakeClock()
    health = breaker(clock)
    open_it(health)
    health.succeeded(False)  # sent before it opened, answered now
    assert health.state is BreakerState.CLOSED and health.accepting()


def test_an_abandoned_probe_lets_the_next_request_probe_at_once() -> None:
    clock = FakeClock()
    health = breaker(clock)
    open_it(health)
    clock.now += 0.5
    probe = health.before_request()
    health.abandoned(probe)  # the client went away mid-probe
    assert health.before_request() is True


def test_a_late_failure_of_an_old_request_does_not_extend_an_open_breaker() -> None:
    clock = FakeClock()
    health = breaker(clock)
    open_it(health)
    clock.now += 0.4
    health.failed(False, "a request from before the outage timed out now")
    clock.now += 0.1
    assert health.accepting()


def test_the_token_cache_stays_within_its_bound_keeping_the_recent_tokens() -> None:
    tokens = TokenCache(max_bytes=200_000)
    for index in range(100_000):
        tokens.put(("https://auth", "svc", f"repository:name-{index}:pull", ""), "t" * 1500, 300)
    assert tokens.weight <= 200_000
    assert 50 < len(tokens) < 200
    assert tokens.get(("https://auth", "svc", "repository:name-99999:pull", "")) == "t" * 1500
    assert tokens.get(("https://auth", "svc", "repository:name-0:pull", "")) is None


JOB = CacheJob(JobKind.MANIFEST, "hub", "library/nginx", "sha256:" + "a" * 64, 3, tag="1.25")


def test_a_sealed_job_opens_only_with_its_key_and_unchanged() -> None:
    signer = JobSigner(b"k" * 32)
    sealed = signer.seal(JOB.pack())
    assert CacheJob.unpack(signer.open(sealed)) == JOB
    with pytest.raises(JobRejected):
        JobSigner(b"another key of 32 bytes........").open(sealed)
    tampered = sealed.replace(b"1.25", b"9.99")
    with pytest.raises(JobRejected):
        signer.open(tampered)
    with pytest.raises(JobRejected):
        signer.open(JOB.pack())  # not sealed at all


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "3"),
        ("size", True),
        ("tag", 7),
        ("data", "text, not bytes"),
        ("attempt", 1.5),
        ("enqueued_at", "2100-01-01"),
        ("repository", None),
        ("staged", ["_staging/x"]),
    ],
)
def test_unpack_refuses_a_field_of_the_wrong_type(field: str, value: object) -> None:
    payload = msgpack.unpackb(JOB.pack())
    payload[field] = value
    with pytest.raises(UnsupportedJobVersion, match="malformed"):
        CacheJob.unpack(msgpack.packb(payload, use_bin_type=True))


def test_an_unconfirmed_tag_job_round_trips() -> None:
    job = replace(JOB, confirmed=False)
    assert CacheJob.unpack(job.pack()).confirmed is False
    assert CacheJob.unpack(JOB.pack()).confirmed is True
