"""Operability: live configuration reload, JSON logs, and what the logs say."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import tomli_w
from aiohttp import web

from tests.fixtures.distribution import Distribution
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import poll_until
from tests.fixtures.threaded_server import ThreadedServer
from tests.fixtures.tls import TestPki

REPO = "docker-io"


def rewrite(mirror: Mirror, change: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads(json.dumps(mirror.config))
    change(config)
    mirror.config = config
    mirror.config_path.write_bytes(tomli_w.dumps(config).encode())


def test_a_changed_upstream_and_rule_apply_live_and_no_pull_fails_meanwhile(
    mirror_factory: MirrorFactory,
    distribution_factory: Callable[..., Distribution],
    pushed_images: PushedImageCache,
) -> None:
    first, second = distribution_factory(), distribution_factory()
    old = pushed_images.get(first, "small", name="app/moved", tag="1.0", content=b"first")
    new = pushed_images.get(second, "small", name="app/moved", tag="1.0", content=b"second")
    mirror = mirror_factory(
        {REPO: {"upstream": [upstream_entry(first)]}},
        global_={
            "access_policy": {"default": "deny", "rules": ["request.action != 'list-catalog'"]}
        },
    )
    path = f"/v2/{REPO}/app/moved/manifests/1.0"
    assert mirror.get(path).content == old.manifest_bytes
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def pull_continuously() -> None:
        while not stop.is_set():
            answer = mirror.get(path)
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text[:200]}")
            else:
                seen.add(answer.headers["Docker-Content-Digest"])

    puller = threading.Thread(target=pull_continuously)
    puller.start()
    try:
        rewrite(mirror, lambda c: c["repository"][REPO].update(upstream=[upstream_entry(second)]))
        rewrite(mirror, lambda c: c["global"]["access_policy"].update(
            rules=["request.action != 'list-catalog'", "request.action == 'list-catalog'"]
        ))  # fmt: skip
        mirror.wait_for_log("configuration reloaded")
        poll_until(lambda: new.digest in seen, 30.0, what="pulls to follow the new upstream")
    finally:
        stop.set()
        puller.join(30)
    assert failures == []
    assert mirror.get(path).content == new.manifest_bytes
    assert mirror.get("/v2/_catalog").status_code == 200  # the new rule is in force
    metrics = mirror.get("/metrics").text
    assert 'registry_config_reloads_total{result="applied"}' in metrics


def test_a_broken_edit_is_rejected_and_the_running_configuration_stays(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream, "small")
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}})
    path = f"/v2/{REPO}/{image.name}/manifests/{image.tag}"
    mirror.config_path.write_text(mirror.config_path.read_text() + "\n[global\nbroken = \n")
    mirror.wait_for_log("configuration reload rejected")
    assert mirror.get(path).status_code == 200
    rewrite(
        mirror, lambda c: c["global"].update(access_policy={"default": "deny", "rules": ["nope("]})
    )
    poll_until(
        lambda: mirror.log().count("configuration reload rejected") >= 2,
        20.0,
        what="the second rejection",
    )
    assert mirror.get(path).status_code == 200
    assert "global.access_policy.rules[0]" in mirror.log()


def test_sighup_reloads_and_a_restart_only_key_is_named_and_kept(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = mirror_factory({REPO: {"upstream": [upstream_entry(upstream)]}})
    port = mirror.port
    config = mirror.config
    config["server"] = {**config["server"], "port": port + 1}
    mirror.config_path.write_bytes(tomli_w.dumps(config).encode())
    assert mirror.process is not None
    mirror.process.send_signal(signal.SIGHUP)
    mirror.wait_for_log("configuration key server.port changed: it needs a restart")
    assert requests.get(f"http://127.0.0.1:{port}/v2/", timeout=10).status_code == 200


def test_json_logs_carry_the_same_fields_as_the_text_lines(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream, "small")
    mirror = mirror_factory(
        {REPO: {"upstream": [upstream_entry(upstream)]}},
        extra={"observability": {"logging": {"format": "json"}}},
    )
    assert mirror.get(f"/v2/{REPO}/{image.name}/manifests/{image.tag}").status_code == 200
    # Its own line (readiness probes are logged too, and may come first).
    mirror.wait_for_log(f'/manifests/{image.tag}", "protocol"')
    events = [json.loads(line) for line in mirror.log().splitlines() if line.startswith("{")]
    access = [
        e
        for e in events
        if e["logger"] == "simple_registry.access"
        and e.get("path", "").endswith(f"/manifests/{image.tag}")
    ]
    assert access and access[0]["status"] == 200 and access[0]["method"] == "GET"
    assert access[0]["identity"] == "anonymous" and access[0]["access"] == "allow"
    fetches = [e for e in events if e["message"].startswith("upstream fetch")]
    assert fetches and fetches[0]["repository"] == REPO and fetches[0]["method"] == "GET"


# -- causes, not "error" ---------------------------------------------------------------------


def _faulty_upstream_app() -> web.Application:
    """Answers by the first name segment: `stall` never answers in time, `limit` is 429,
    `fail` is 503 with an OCI error body, `corrupt` sends bytes that are not the digest."""

    async def handle(request: web.Request) -> web.StreamResponse:
        mode = request.path.split("/")[2] if request.path.count("/") > 2 else ""
        if request.path in ("/v2", "/v2/"):
            return web.json_response({})
        if mode == "stall":
            await asyncio.sleep(10)
        if mode == "limit":
            return web.Response(status=429, headers={"Retry-After": "1"})
        if mode == "fail":
            return web.json_response(
                {"errors": [{"code": "UNAVAILABLE", "message": "maintenance"}]}, status=503
            )
        return web.Response(
            body=b'{"schemaVersion": 2, "corrupt": true}',
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
def faulty_upstreams(test_pki: TestPki) -> Iterator[tuple[ThreadedServer, ThreadedServer]]:
    plain = ThreadedServer(_faulty_upstream_app, name="faulty").start()
    untrusted = TestPki(test_pki.folder / "untrusted", name="untrusted-ca").server("untrusted")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(untrusted.cert, untrusted.key)
    tls = ThreadedServer(_faulty_upstream_app, name="faulty-tls", ssl_context=context).start()
    try:
        yield plain, tls
    finally:
        plain.stop()
        tls.stop()


def test_each_upstream_failure_is_logged_and_counted_with_its_cause(
    mirror_factory: MirrorFactory,
    faulty_upstreams: tuple[ThreadedServer, ThreadedServer],
    refused_url: str,
) -> None:
    plain, tls = faulty_upstreams
    repositories = {
        "dns": {"upstream": [{"url": "https://registry.no-such-host.invalid"}]},
        "refused": {"upstream": [{"url": refused_url}]},
        "faulty": {"upstream": [{"url": plain.url, "read_timeout_secs": 1}]},
        "tls": {"upstream": [{"url": tls.url}]},
    }
    mirror = mirror_factory(repositories, global_={"upstream_failure_threshold": 100})
    digest = "sha256:" + "0" * 64
    cases = [
        ("dns/a/b/manifests/1", "dns", 503),
        ("refused/a/b/manifests/1", "connect_refused", 503),
        ("faulty/stall/x/manifests/1", "read_timeout", 503),
        ("tls/a/b/manifests/1", "tls", 503),
        ("faulty/fail/x/manifests/1", "http_503", 503),
        (f"faulty/corrupt/x/manifests/{digest}", "digest_mismatch", 503),
        # Last: a 429 holds every request to that upstream back for its Retry-After.
        ("faulty/limit/x/manifests/1", "rate_limited", 429),
    ]
    for path, cause, status in cases:
        answer = mirror.get(f"/v2/{path}")
        assert answer.status_code == status, (path, answer.text)
        mirror.wait_for_log(f"cause={cause}")
        line = next(
            entry
            for entry in mirror.log().splitlines()
            if "pull failed" in entry and f"/v2/{path}" in entry
        )
        assert f"cause={cause}" in line and f"answered={status}" in line, line
    metrics = mirror.get("/metrics").text
    for _path, cause, _status in cases:
        assert re.search(
            rf'registry_upstream_failures_total{{cause="{cause}",upstream="[^"]+"}} [1-9]', metrics
        ), cause
    assert "code=" not in metrics
    assert "UNAVAILABLE" in mirror.log()  # the upstream's own error code is in the failure's line


# -- tracing ---------------------------------------------------------------------------------


class OtlpReceiver:
    """A small OTLP/HTTP collector: keeps every span it is sent (protobuf bodies)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.server = ThreadedServer(self._app, name="otlp").start()

    def _app(self) -> web.Application:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        async def traces(request: web.Request) -> web.Response:
            export = ExportTraceServiceRequest()
            export.ParseFromString(await request.read())
            for resource in export.resource_spans:
                service = next(
                    (a.value.string_value for a in resource.resource.attributes if a.key == "service.name"),
                    "",
                )  # fmt: skip
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value for a in span.attributes}
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "trace": span.trace_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "id": span.span_id.hex(),
                                "attributes": {
                                    k: (v.string_value or v.int_value)
                                    for k, v in attributes.items()
                                },
                            }
                        )
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/traces", traces)
        return app


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.server.stop()


def test_a_cold_pull_in_split_mode_is_one_trace_across_frontend_and_cacher(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    redis_server: Any,
    otlp_receiver: OtlpReceiver,
    tmp_path: Any,
) -> None:
    image = pushed_images.get(upstream, "small", name="traced/app", tag="1.0")
    tracing = {
        "observability": {"tracing": {"endpoint": otlp_receiver.server.url, "sampling_rate": 1.0}}
    }
    repositories = {REPO: {"upstream": [upstream_entry(upstream)]}}
    shared = tmp_path / "shared"
    frontend = mirror_factory(
        repositories, command="frontend", redis_url=redis_server.url, root=shared, extra=tracing
    )
    cacher = mirror_factory(
        repositories, command="cacher", redis_url=redis_server.url, root=shared, extra=tracing
    )
    path = f"/v2/{REPO}/traced/app/manifests/1.0"
    assert frontend.get(path).content == image.manifest_bytes
    frontend.wait_for_tag(f"{REPO}/traced/app", "1.0")
    assert frontend.get(path).status_code == 200  # warm

    def spans_of(service: str) -> list[dict[str, Any]]:
        return [s for s in otlp_receiver.spans if s["service"] == service]

    poll_until(
        lambda: bool(spans_of("simple-registry-cacher")) and len([s for s in spans_of("simple-registry-frontend") if s["name"].startswith("GET")]) >= 2,
        30.0,
        what="spans from the frontend and the cacher",
    )  # fmt: skip
    requests_ = [
        s
        for s in spans_of("simple-registry-frontend")
        if s["attributes"].get("registry.action") == "get-manifest"
    ]
    cold = next(s for s in requests_ if s["attributes"].get("registry.cache") == "miss")
    warm = next(
        s for s in requests_ if s["attributes"].get("registry.cache") in ("revalidated", "hit")
    )
    assert cold["attributes"]["registry.repository"] == REPO
    upstream_spans = [
        s for s in spans_of("simple-registry-frontend") if s["name"].startswith("upstream ")
    ]
    assert any(s["trace"] == cold["trace"] for s in upstream_spans)
    job = next(s for s in spans_of("simple-registry-cacher") if s["name"] == "cache job manifest")
    assert job["trace"] == cold["trace"], "the cacher's work joins the pull's trace"
    assert warm["trace"] != cold["trace"]
    del cacher
