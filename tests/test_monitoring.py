"""Dashboards and alerts (deploy/monitoring/): the rules pass promtool's checks and their unit
tests, every dashboard query is valid PromQL, and every metric and label they name exists
in the /metrics of a running frontend and cacher after a pull.

promtool comes from Debian's `prometheus` package (scripts/test installs it); kubectl and
kubernetes-validate from the test extras.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from simple_registry.common.metrics import Metrics
from simple_registry.common.queue.jobs import CacheJob, JobKind

from tests.fixtures.distribution import Distribution
from tests.fixtures.mirror import MirrorFactory, upstream_entry
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.fixtures.skopeo import skopeo_copy

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "dashboard.json"
REPO = "docker-io"

# Labels Prometheus adds to every scraped series, and a histogram's bucket bound.
TARGET_LABELS = {"job", "instance", "namespace", "le"}
# Grafana's variables, as a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$job": ".*"}

# What issue 17 asks the dashboard to show and the rules to alert on.
DASHBOARD_FAMILIES = {
    "registry_cache_lookups_total",  # hit ratio
    "registry_bytes_served_total",  # bytes from cache vs upstream
    "registry_upstream_bytes_total",
    "registry_http_request_duration_seconds",  # latency by route (the action)
    "registry_upstream_failures_total",  # upstream errors by cause
    "registry_upstream_breaker_state",
    "registry_upstream_ratelimit_remaining",
    "registry_cache_queue_depth",
    "registry_cache_dead_letters",
    "registry_storage_bytes",
    "registry_storage_budget_bytes",
    "registry_config_reloads_total",
}
ALERT_NAMES = {
    "RegistryUpstreamDown",
    "RegistryUpstreamBreakerOpen",
    "RegistryUpstreamRateLimitNearlyExhausted",
    "RegistryCacheDeadLettersGrowing",
    "RegistryStorageNearBudget",
    "RegistryHitRatioFalling",
    "RegistryConfigReloadRejected",
}
# Families that have labelled series after a healthy cold and warm pull (the others, such
# as failures by cause, only after a fault).
SERIES_AFTER_A_PULL = {
    "registry_http_requests_total",
    "registry_http_request_duration_seconds",
    "registry_cache_lookups_total",
    "registry_upstream_requests_total",
    "registry_upstream_bytes_total",
    "registry_bytes_served_total",
    "registry_cache_jobs_total",
    "registry_cache_job_duration_seconds",
    "registry_upstream_breaker_state",
    "registry_config_info",
}


# --------------------------------------------------------------------------- reading them


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: scripts/test installs Debian's prometheus")
    return found


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def as_prometheus_sees_it(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and every dashboard query."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for panel in dashboard_panels():
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", as_prometheus_sees_it(target["expr"])))
    return found


def without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bregistry_[a-z0-9_]+\b", without_strings(expr)))


def selector_labels(expr: str) -> set[tuple[str, str]]:
    """(metric, label) of every label matcher: `name{label="x", ...}`."""
    found = set()
    for name, matchers in re.findall(r"\b(registry_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            found.add((name, label))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels of `by`, `without`, `on` and `ignoring` clauses."""
    found = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", without_strings(expr)):
        found |= {label.strip() for label in group.split(",") if label.strip()}
    return found


def family_of(name: str, families: dict[str, str]) -> str | None:
    """The family a sample name belongs to (`x_bucket` of the histogram `x`), if declared."""
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and families.get(base) == "histogram":
            return base
    return None


def declared_families(text: str) -> dict[str, str]:
    """Family name -> type, from the `# TYPE` lines of Prometheus text."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def sampled_labels(text: str) -> dict[str, set[str]]:
    """Sample name -> the label names seen on its samples."""
    found: dict[str, set[str]] = {}
    for name, labels in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", text, re.MULTILINE):
        found.setdefault(name, set()).update(re.findall(r'(\w+)="', labels))
    return found


def declared_label_names() -> dict[str, set[str]]:
    """Family -> the label names the code declares for it."""
    names: dict[str, set[str]] = {}
    for collector in vars(Metrics()).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                names[family.name] = set(collector._labelnames)
    # A Counter's family is described without its _total.
    return {**names, **{f"{name}_total": labels for name, labels in names.items()}}


# --------------------------------------------------------------------------- promtool


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    result = run(promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_check_rules_rejects_a_misspelt_function_so_its_verdict_means_something(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("increase(", "increse(", 1))
    result = run(promtool(), "check", "rules", str(broken))
    assert result.returncode != 0
    assert "increse" in result.stdout + result.stderr


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = run(promtool(), "test", "rules", ALERTS_TEST.name, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_a_wrong_expectation_so_its_verdict_means_something(
    tmp_path: Path,
) -> None:
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    down = next(
        check
        for case in tests["tests"]
        for check in case["alert_rule_test"]
        if check["alertname"] == "RegistryUpstreamDown" and check["exp_alerts"]
    )
    down["exp_alerts"][0]["exp_labels"]["upstream"] = "ghcr.io"  # the one that answers
    (tmp_path / ALERTS_TEST.name).write_text(yaml.safe_dump(tests))
    result = run(promtool(), "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "RegistryUpstreamDown" in result.stdout + result.stderr


def test_the_unit_tests_cover_the_upstream_down_and_dead_letter_alerts_both_ways() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    checks = [check for case in tests["tests"] for check in case["alert_rule_test"]]
    for alert in ("RegistryUpstreamDown", "RegistryCacheDeadLettersGrowing"):
        verdicts = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == alert}
        assert verdicts == {True, False}, alert  # fires in one case, stays quiet in another


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{panel['id']}:{target['refId']}", "expr": expr}
        for panel in dashboard_panels()
        for target in panel["targets"]
        for expr in [as_prometheus_sees_it(target["expr"])]
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) >= 20


# --------------------------------------------------------------------------- what they hold


def test_the_rules_alert_on_what_the_issue_names_each_with_a_severity_and_a_summary() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) >= ALERT_NAMES, ALERT_NAMES - set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_the_dashboard_shows_what_the_issue_names() -> None:
    shown: set[str] = set()
    families = {name: "histogram" for name in DASHBOARD_FAMILIES}  # accept _bucket
    for panel in dashboard_panels():
        for target in panel["targets"]:
            shown |= {family_of(n, families) or n for n in metric_names(target["expr"])}
    assert shown >= DASHBOARD_FAMILIES, DASHBOARD_FAMILIES - shown


def test_the_dashboard_panels_have_unique_ids_its_datasource_and_fit_the_grid() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "simple-registry"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job"}
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])


def test_the_monitoring_kustomization_renders_configmaps_of_the_files_that_pass_validation() -> (
    None
):
    import kubernetes_validate

    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"
    result = run(kubectl, "kustomize", str(MONITORING))
    assert result.returncode == 0, result.stderr
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout) if d}
    assert set(docs) == {"simple-registry-alerts", "simple-registry-dashboard"}
    for doc in docs.values():
        assert doc["kind"] == "ConfigMap"
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert docs["simple-registry-alerts"]["data"] == {
        "simple-registry-alerts.yml": ALERTS.read_text()
    }
    dashboard_map = docs["simple-registry-dashboard"]
    assert dashboard_map["data"] == {"simple-registry.json": DASHBOARD.read_text()}
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"


# --------------------------------------------------------------------------- a running registry


@pytest.fixture
def scraped_after_a_pull(
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    tmp_path: Path,
) -> Iterator[str]:
    """The /metrics of a frontend and of a standalone cacher (Redis queue, one shared
    folder), after a cold pull the cacher stored and a warm pull of the same image."""
    image = pushed_images.get(upstream, "small", name="monitoring/app", tag="1.0")
    repositories = {REPO: {"upstream": [upstream_entry(upstream)]}}
    shared = tmp_path / "shared"
    frontend = mirror_factory(
        repositories, command="frontend", redis_url=redis_server.url, root=shared
    )
    cacher = mirror_factory(repositories, command="cacher", redis_url=redis_server.url, root=shared)
    reference = f"{frontend.host_port}/{REPO}/{image.name}:{image.tag}"
    skopeo_copy(reference, tmp_path / "cold")
    frontend.wait_for_links(f"{REPO}/{image.name}", set(image.blob_digests))
    skopeo_copy(reference, tmp_path / "warm")
    yield frontend.metrics() + cacher.metrics()


def test_every_metric_and_label_the_dashboard_and_the_alerts_name_exists_in_a_running_registry(
    scraped_after_a_pull: str,
) -> None:
    text = scraped_after_a_pull
    families = declared_families(text)
    declared = declared_label_names()
    missing, unknown_labels = [], []
    for where, expr in expressions():
        named = {name: family_of(name, families) for name in metric_names(expr)}
        missing += [f"{where}: {name}" for name, family in named.items() if family is None]
        labels_in_expr = set(TARGET_LABELS)
        for name, family in named.items():
            labels_in_expr |= declared.get(family or name, set())
        for name, label in selector_labels(expr):
            family = named.get(name) or name
            if label not in declared.get(family, set()) | TARGET_LABELS:
                unknown_labels.append(f"{where}: {name}{{{label}}}")
        unknown_labels += [
            f"{where}: by/on ({label})" for label in grouping_labels(expr) - labels_in_expr
        ]
    assert missing == [], "metrics not in /metrics"
    assert unknown_labels == [], "labels the metrics do not have"


def test_after_a_pull_the_labelled_series_the_dashboard_plots_are_there(
    scraped_after_a_pull: str,
) -> None:
    sampled = sampled_labels(scraped_after_a_pull)
    declared = declared_label_names()
    for family in SERIES_AFTER_A_PULL:
        names = [family, f"{family}_bucket"] if family not in sampled else [family]
        seen = set().union(*(sampled.get(name, set()) for name in names))
        assert seen, f"no series of {family}"
        assert declared[family] <= seen, (family, declared[family] - seen)
    text = scraped_after_a_pull
    assert re.search(r'registry_cache_lookups_total\{kind="blob",result="hit"\} [1-9]', text)
    assert re.search(
        r'registry_upstream_breaker_state\{state="closed",upstream="127\.0\.0\.1:\d+"\} 1\.0', text
    )
    assert "registry_cache_dead_letters 0.0" in text


def test_the_breaker_and_dead_letter_gauges_show_a_cacher_whose_upstream_refuses(
    mirror_factory: MirrorFactory, redis_server: RedisServer, refused_url: str
) -> None:
    cacher = mirror_factory(
        {REPO: {"upstream": [{"url": refused_url, "connect_timeout_secs": 1}]}},
        command="cacher",
        redis_url=redis_server.url,
        global_={"upstream_failure_threshold": 1},
        extra={"queue": {"redis": {"max_attempts": 1}}},
    )
    host = refused_url.removeprefix("http://")
    assert cacher.metric("registry_upstream_breaker_state", upstream=host, state="closed") == 1
    digest = "sha256:" + "ab" * 32
    enqueue_jobs(redis_server.url, [CacheJob(JobKind.BLOB, REPO, "app/x", digest, size=10)])
    poll_until(
        lambda: cacher.metric("registry_cache_dead_letters") == 1, 60, what="one dead letter"
    )
    assert cacher.metric("registry_upstream_breaker_state", upstream=host, state="open") == 1
    assert cacher.metric("registry_upstream_breaker_state", upstream=host) == 1  # one state
    assert cacher.metric("registry_cache_jobs_total", outcome="dead-lettered") == 1
