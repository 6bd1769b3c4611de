"""The web UI's pure pieces: reading manifests, parsing its routes into actions, the
sampled counters, the cross-site check, the page helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from simple_registry.common.errors import (
    Denied,
    DigestInvalid,
    NameInvalid,
    NotFound,
    PaginationInvalid,
    TagInvalid,
    Unsupported,
)
from simple_registry.common.manifests import (
    ManifestUnreadable,
    Platform,
    parse_manifest,
)
from simple_registry.common.metrics import Metrics
from simple_registry.common.oci import Digest, RepositoryName, Tag
from simple_registry.frontend.actions import (
    CacheStatus,
    GetManifest,
    ListFailedJobs,
    ListJobs,
    ListNamespaces,
    ListRepositories,
    ListRevisions,
    RetryJob,
    UiAsset,
    UiConfig,
    ViewManifest,
    WarmImage,
    parse_request,
)
from simple_registry.frontend.ui.guard import refuse_cross_site
from simple_registry.frontend.ui.images import summarize_config
from simple_registry.frontend.ui.pages import ago, bars, human_bytes, page_url, short_digest
from simple_registry.frontend.ui.stats import CounterSampler

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha256:" + "c" * 64


def manifest(**fields: Any) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


# -- manifests ---------------------------------------------------------------------------


def test_an_image_manifest_names_its_config_layers_subject_and_annotations() -> None:
    contents = parse_manifest(
        manifest(
            config={
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": D1,
                "size": 10,
            },
            layers=[
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": D2,
                    "size": 20,
                }
            ],
            subject={
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": D3,
                "size": 5,
            },
            artifactType="application/vnd.example.sbom",
            annotations={"org.example": "<script>x</script>", "n": 3},
        ),
        "application/vnd.oci.image.manifest.v1+json",
    )
    assert not contents.is_index
    assert [str(blob.digest) for blob in contents.blobs] == [D1, D2]
    assert contents.blob_bytes == 30
    assert contents.subject is not None and str(contents.subject.digest) == D3
    assert contents.artifact_type == "application/vnd.example.sbom"
    assert contents.annotations == {"org.example": "<script>x</script>", "n": "3"}


def test_an_index_names_its_children_with_their_platforms() -> None:
    contents = parse_manifest(
        manifest(
            manifests=[
                {
                    "mediaType": "m",
                    "digest": D1,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": "m",
                    "digest": D2,
                    "size": 2,
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
                {"mediaType": "m", "digest": D3, "size": 3},
            ]
        ),
        "application/vnd.oci.image.index.v1+json",
    )
    assert contents.is_index
    assert [str(c.platform) if c.platform else None for c in contents.manifests] == [
        "linux/amd64",
        "linux/arm64/v8",
        None,
    ]
    assert contents.blobs == ()


def test_a_schema_1_manifest_names_each_layer_once_oldest_first() -> None:
    data = json.dumps(
        {"schemaVersion": 1, "fsLayers": [{"blobSum": D2}, {"blobSum": D1}, {"blobSum": D2}]}
    )
    contents = parse_manifest(
        data.encode(), "application/vnd.docker.distribution.manifest.v1+prettyjws"
    )
    assert [str(layer.digest) for layer in contents.layers] == [D2, D1]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1]",
        manifest(layers={"digest": D1}),
        manifest(layers=[{"digest": "sha256:zz"}]),
    ],
)
def test_bytes_that_are_no_manifest_are_refused(data: bytes) -> None:
    with pytest.raises(ManifestUnreadable):
        parse_manifest(data, "application/vnd.oci.image.manifest.v1+json")


def test_a_platform_matches_any_variant_unless_one_is_asked_for() -> None:
    arm = Platform("linux", "arm64", "v8")
    assert arm.matches(Platform.parse("linux/arm64"))
    assert arm.matches(Platform.parse("linux/arm64/v8"))
    assert not arm.matches(Platform.parse("linux/arm64/v7"))
    assert not arm.matches(Platform.parse("linux/amd64"))
    with pytest.raises(ValueError):
        Platform.parse("linux")


def test_an_image_config_is_summarized_and_anything_else_is_not() -> None:
    config = json.dumps(
        {
            "os": "linux",
            "architecture": "arm64",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Entrypoint": ["/bin/sh"],
                "Cmd": "x",
                "Env": ["A=1", "B=2"],
                "Labels": {"k": "v"},
            },
            "history": [{}, {}],
        }
    ).encode()
    summary = summarize_config(config)
    assert summary is not None
    assert (summary.os, summary.architecture, summary.entrypoint, summary.cmd) == (
        "linux",
        "arm64",
        ("/bin/sh",),
        ("x",),
    )
    assert (summary.env_count, summary.labels, summary.history) == (2, {"k": "v"}, 2)
    assert summarize_config(b"\x00binary") is None


# -- routes as actions -------------------------------------------------------------------


def parse(method: str, query: dict[str, str] | None = None, **match_info: str) -> Any:
    return parse_request(method, "/ignored", match_info, query or {})


def test_each_page_parses_to_the_action_the_policy_decides_on() -> None:
    assert parse("GET", ui_page="") == ListRepositories()
    assert parse("GET", ui_page="_cache") == CacheStatus()
    assert parse("GET", ui_repository="docker-io") == ListNamespaces("docker-io")
    assert parse("GET", ui_page="docker-io/library/nginx") == ListRevisions(
        RepositoryName("docker-io/library/nginx")
    )
    tagged = parse("HEAD", ui_page="docker-io/library/nginx:1.25")
    assert tagged == ViewManifest(RepositoryName("docker-io/library/nginx"), Tag("1.25"))
    assert tagged.name == "get-manifest" and isinstance(tagged, GetManifest)
    assert tagged.route_label != GetManifest.route_label
    assert parse("GET", ui_page=f"a/b@{D1}") == ViewManifest(
        RepositoryName("a/b"), Digest.parse(D1)
    )
    assert parse("GET", ui_asset="ui.css") == UiAsset("ui.css")


def test_the_json_api_parses_to_angos_actions_and_ours() -> None:
    assert parse("GET", ui_api="ui/config") == UiConfig()
    assert parse("GET", ui_api="repositories/list") == ListRepositories()
    assert parse("GET", {"repository": "hub"}, ui_api="namespaces/list").request_variables() == {
        "action": "list-namespaces",
        "repository": "hub",
    }
    assert parse("GET", ui_api="revisions/list", ui_namespace="hub/x") == ListRevisions(
        RepositoryName("hub/x")
    )
    assert parse("GET", {"n": "5", "after": "1-0"}, ui_api="jobs/failed") == ListFailedJobs(
        5, "1-0"
    )
    assert parse("GET", ui_api="jobs/list").request_variables() == {
        "action": "list-jobs",
        "queue": "cache",
    }
    assert parse("POST", {"key": "17-0"}, ui_api="jobs/failed") == RetryJob("17-0")
    warm = parse(
        "POST", {"platform": "linux/amd64,linux/arm64/v8"}, ui_api="warm/1.0", ui_namespace="hub/x"
    )
    assert warm == WarmImage(RepositoryName("hub/x"), Tag("1.0"), ("linux/amd64", "linux/arm64/v8"))
    assert warm.request_variables() == {
        "action": "warm-image",
        "namespace": "hub/x",
        "reference": "1.0",
    }
    assert isinstance(parse("GET", ui_api="cache/status"), CacheStatus)
    assert isinstance(parse("GET", ui_api="jobs/list"), ListJobs)


@pytest.mark.parametrize(
    ("method", "query", "match_info", "error"),
    [
        ("POST", {}, {"ui_page": ""}, Unsupported),
        ("DELETE", {}, {"ui_page": "hub/x:1"}, Unsupported),
        ("GET", {}, {"ui_page": "Hub/X"}, NameInvalid),
        ("GET", {}, {"ui_page": "hub/x:-bad"}, TagInvalid),
        ("GET", {}, {"ui_page": "hub/x@sha256:zz"}, DigestInvalid),
        ("GET", {}, {"ui_api": "nope"}, NotFound),
        ("PUT", {}, {"ui_api": "ui/config"}, Unsupported),
        ("GET", {"repository": "../etc"}, {"ui_api": "namespaces/list"}, NameInvalid),
        ("GET", {"n": "x"}, {"ui_api": "jobs/list"}, PaginationInvalid),
        ("GET", {"after": "<x>"}, {"ui_api": "jobs/failed"}, PaginationInvalid),
        ("POST", {"key": "<x>"}, {"ui_api": "jobs/failed"}, NotFound),
        ("GET", {}, {"ui_api": "warm/1.0", "ui_namespace": "hub/x"}, NotFound),
        (
            "POST",
            {"platform": "linux"},
            {"ui_api": "warm/1.0", "ui_namespace": "hub/x"},
            NameInvalid,
        ),
    ],
)
def test_a_bad_ui_request_is_a_registry_error_never_an_action(
    method: str, query: dict[str, str], match_info: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_request(method, "/x", match_info, query)


# -- the sampled counters ----------------------------------------------------------------


def test_windows_and_buckets_are_differences_of_the_sampled_counters() -> None:
    metrics = Metrics()
    sampler = CounterSampler(metrics, interval_secs=60.0)
    start = 1_000_000.0
    sampler.sample(start)
    metrics.cache.labels("manifest", "hit").inc(3)
    metrics.cache.labels("blob", "revalidated").inc(1)
    metrics.cache.labels("blob", "miss").inc(2)
    metrics.cache.labels("blob", "coalesced").inc(1)  # a miss already counted as one
    metrics.bytes_served.labels("cache").inc(1000)
    metrics.bytes_served.labels("upstream").inc(500)
    sampler.sample(start + 60)
    metrics.cache.labels("manifest", "hit").inc(6)
    now = start + 120
    hour = sampler.window(3600, now)
    assert (hour.hits, hour.misses, hour.cache_bytes, hour.upstream_bytes) == (10, 2, 1000, 500)
    assert hour.hit_ratio == pytest.approx(10 / 12)
    assert hour.covered_secs == 120
    last_minute = sampler.window(60, now)
    assert (last_minute.hits, last_minute.misses) == (6, 0)
    buckets = sampler.series(180, 3, now)
    assert [(b.hits, b.misses) for b in buckets] == [(0, 0), (4, 2), (6, 0)]
    assert sum(b.cache_bytes for b in buckets) == 1000


def test_a_window_with_no_lookups_has_no_ratio() -> None:
    sampler = CounterSampler(Metrics(), interval_secs=1.0)
    assert sampler.window(3600).hit_ratio is None


# -- cross-site protection ---------------------------------------------------------------


def post(headers: dict[str, str]) -> web.Request:
    return make_mocked_request(
        "POST", "/v2/_angos/jobs/failed", headers={"Host": "reg:5000", **headers}
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://reg:5000"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://reg:5000"},
        {},  # no browser: curl, scripts
    ],
)
def test_an_action_from_this_registrys_pages_or_from_no_browser_passes(
    headers: dict[str, str],
) -> None:
    refuse_cross_site(post(headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://other.reg:5000"},
        {"Origin": "http://evil"},
        {"Origin": "null"},
    ],
)
def test_an_action_from_another_site_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(Denied):
        refuse_cross_site(post(headers))


# -- page helpers ------------------------------------------------------------------------


def test_page_helpers_format_sizes_digests_times_and_links() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert short_digest(D1) == "sha256:aaaaaaaaaaaa"
    assert ago(100.0, now=130.0) == "30 s ago"
    assert ago(0, now=1.0) == "\u2013"
    assert page_url("hub/x", tag="1.0") == "/hub/x:1.0"
    assert page_url("hub/x", digest=D1) == f"/hub/x@{D1}"
    # A tag read from storage by hand may hold anything: it is quoted, never raw.
    assert page_url("hub/x", tag='"><img>') == "/hub/x:%22%3E%3Cimg%3E"


def test_chart_bars_stack_to_the_tallest_bucket() -> None:
    metrics = Metrics()
    sampler = CounterSampler(metrics, 60.0)
    sampler.sample(0.0)
    metrics.cache.labels("blob", "hit").inc(3)
    metrics.cache.labels("blob", "miss").inc(1)
    drawn = bars(sampler.series(120, 2, now=120.0), "lookups")
    assert len(drawn) == 2
    tallest = max(bar.low + bar.high for bar in drawn)
    assert tallest == pytest.approx(120.0)
    assert drawn[-1].low == pytest.approx(90.0) and drawn[-1].high == pytest.approx(30.0)
