"""Operability: live configuration reload, JSON logs, and what the logs say."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from typing import Any

import requests
import tomli_w

from tests.fixtures.distribution import Distribution
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import poll_until

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
    mirror.wait_for_log('"logger": "simple_registry.access"')
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
