"""The web UI's JSON API and its protections, black-box against a registry whose cache
skopeo filled from CNCF Distribution: what each endpoint answers against what storage
holds, paging, errors, cross-site refusals, the access policy, `[ui]` itself."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import requests
import tomli_w

from tests.fixtures.access import identities
from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import (
    REGISTRY_COMMAND,
    Mirror,
    MirrorFactory,
    metric_sample,
    mirror_config,
    upstream_entry,
)
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.ports import free_port, poll_until
from tests.fixtures.skopeo import skopeo_copy

HUB = "hub"
ALLOW = {"access_policy": {"default": "allow"}}
UI = {"ui": {"enabled": True, "name": "Team cache"}}
ACCEPT = {
    "Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
}


def start(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    *,
    global_: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Mirror:
    return mirror_factory(
        {HUB: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}},
        global_=global_ if global_ is not None else ALLOW,
        extra={**UI, **(extra or {})},
    )


def api(mirror: Mirror, path: str, **kwargs: Any) -> Any:
    response = mirror.get(path, **kwargs)
    assert response.status_code == 200, (path, response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def layer_bytes(mirror: Mirror, name: str) -> int:
    folder = mirror.data_root / "repositories" / name / "_layers"
    return sum(json.loads(p.read_bytes())["size"] for p in folder.glob("*/*"))


def tags_in_storage(mirror: Mirror, name: str) -> set[str]:
    folder = mirror.data_root / "repositories" / name / "_manifests" / "tags"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def pull(mirror: Mirror, image: PushedImage, tmp_path: Path, **options: Any) -> None:
    skopeo_copy(
        f"{mirror.host_port}/{HUB}/{image.name}:{image.tag}", tmp_path / image.name, **options
    )
    mirror.wait_for_tag(f"{HUB}/{image.name}", image.tag)
    mirror.wait_for_links(f"{HUB}/{image.name}", set(image.blob_digests))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_json_api_answers_what_storage_holds_in_angos_shapes(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    multi_platform_image: PushedImage,
    tmp_path: Path,
) -> None:
    mirror = start(mirror_factory, upstream)
    pull(mirror, small_image, tmp_path)
    pull(mirror, multi_platform_image, tmp_path, all_images=True)
    index_name = f"{HUB}/{multi_platform_image.name}"

    assert api(mirror, "/v2/_angos/ui/config") == {"name": "Team cache"}
    (repository,) = api(mirror, "/v2/_angos/repositories/list")["repositories"]
    assert repository | {"namespace_count": 2} == {
        "name": HUB,
        "namespace_count": 2,
        "tag_count": 2,
        "manifest_count": 4,  # the small image's, the index and its two platforms
        "pull_through_cache": True,
        "immutable_tags": True,
        "upstream_urls": [upstream.url],
        "namespace": None,
    }
    listed = api(mirror, f"/v2/_angos/namespaces/list?repository={HUB}")
    assert listed["repository"] == HUB and listed["total"] == 2
    by_name = {entry["name"]: entry for entry in listed["namespaces"]}
    for image in (small_image, multi_platform_image):
        name = f"{HUB}/{image.name}"
        assert by_name[name]["tag_count"] == len(tags_in_storage(mirror, name))
        assert by_name[name]["size"] == layer_bytes(mirror, name) == sum(image.blob_sizes.values())

    revisions = api(mirror, f"/v2/{index_name}/_angos/revisions/list")
    (root,) = revisions["manifests"]
    assert root["digest"] == multi_platform_image.digest and root["tags"] == ["latest"]
    assert {(c["digest"], c["platform"]["architecture"]) for c in root["children"]} == {
        (m.digest, m.platform.architecture) for m in multi_platform_image.manifests
    }
    assert all(child["cached"] for child in root["children"])

    small_name = f"{HUB}/{small_image.name}"
    detail = api(mirror, f"/v2/{small_name}/_angos/manifests/{small_image.tag}")
    stored = small_image.image.raw
    assert detail["digest"] == small_image.digest
    assert [(layer["digest"], layer["size"], layer["cached"]) for layer in detail["layers"]] == [
        (layer["digest"], layer["size"], True) for layer in json.loads(stored)["layers"]
    ]
    assert detail["image_config"]["os"] == "linux"
    assert detail["image_config"]["architecture"] == "amd64"

    status = api(mirror, "/v2/_angos/cache/status")
    metrics = mirror.metrics()
    assert status["last_hour"]["misses"] == metric_sample(
        metrics, "registry_cache_lookups_total", result="miss"
    )
    assert {(p["name"], p["reference"]) for p in status["recent_pulls"]} >= {
        (small_name, small_image.tag),
        (index_name, multi_platform_image.tag),
    }
    assert [u["state"] for u in status["upstreams"]] == ["closed"]
    assert status["queue"]["kind"] == "memory" and status["failed"] == []
    assert api(mirror, "/v2/_angos/jobs/failed") == {"failed": []}
    assert "jobs" in api(mirror, "/v2/_angos/jobs/list")


def test_thousands_of_images_are_paged_with_n_and_last_and_filtered_with_q(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    images = [pushed_images.get(upstream, "small", name=f"ui/page-{i}") for i in range(5)]
    mirror = start(mirror_factory, upstream)
    for image in images:
        assert mirror.get(f"/v2/{HUB}/{image.name}/manifests/latest", headers=ACCEPT).ok
        mirror.wait_for_tag(f"{HUB}/{image.name}", "latest")
    seen: list[str] = []
    path = f"/v2/_angos/namespaces/list?repository={HUB}&n=2"
    pages = 0
    while path:
        response = mirror.get(path)
        page = response.json()
        assert len(page["namespaces"]) <= 2 and page["total"] == 5
        seen += [entry["name"] for entry in page["namespaces"]]
        pages += 1
        link = response.headers.get("Link")
        assert (link is None) == ("next" not in page)
        path = re.match(r"<([^>]+)>", link).group(1) if link else ""  # type: ignore[union-attr]
    assert pages == 3
    assert seen == sorted(f"{HUB}/{image.name}" for image in images)
    filtered = api(mirror, f"/v2/_angos/namespaces/list?repository={HUB}&q=page-3")
    assert [entry["name"] for entry in filtered["namespaces"]] == [f"{HUB}/ui/page-3"]
    html = mirror.get(f"/{HUB}?n=2")
    assert html.status_code == 200 and 'rel="next"' in html.text


def test_a_bad_api_request_gets_an_oci_error_never_a_500(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = start(mirror_factory, upstream)
    for method, path, status, code in (
        (
            "GET",
            f"/v2/_angos/namespaces/list?repository={HUB}&n=abc",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        ("GET", "/v2/_angos/namespaces/list?repository=nope", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/_angos/namespaces/list", 400, "NAME_INVALID"),
        ("GET", "/v2/_angos/no/such/thing", 404, "NOT_FOUND"),
        ("PUT", "/v2/_angos/ui/config", 405, "UNSUPPORTED"),
        ("GET", f"/v2/{HUB}/ui/never/_angos/revisions/list", 404, "NAME_UNKNOWN"),
        ("GET", f"/v2/{HUB}/ui/never/_angos/manifests/1.0", 404, "MANIFEST_UNKNOWN"),
        ("POST", f"/v2/{HUB}/ui/never/_angos/warm/1.0", 404, "MANIFEST_UNKNOWN"),
        ("POST", "/v2/_angos/jobs/failed?key=1-0", 404, "NOT_FOUND"),
        ("GET", "/v2/_angos/jobs/failed?n=99999999", 400, "PAGINATION_NUMBER_INVALID"),
    ):
        response = requests.request(method, mirror.url + path, timeout=30)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        assert response.json()["errors"][0]["code"] == code, (path, response.text)


def test_a_warm_sent_from_another_site_is_refused_and_fetches_nothing(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache
) -> None:
    image = pushed_images.get(upstream, "small", name="ui/cross-site")
    mirror = start(mirror_factory, upstream)
    warm = f"{mirror.url}/v2/{HUB}/{image.name}/_angos/warm/{image.tag}"
    mark = upstream.mark()
    for headers in (
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "same-site", "Origin": f"http://other.{mirror.host_port}"},
    ):
        response = requests.post(warm, headers=headers, timeout=30)
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["errors"][0]["code"] == "DENIED"
    # GET never changes anything: the warm route takes no GET.
    assert requests.get(warm, timeout=30).status_code == 404
    assert upstream.settled_requests_since(mark) == []
    assert tags_in_storage(mirror, f"{HUB}/{image.name}") == set()

    same = requests.post(
        warm, headers={"Origin": mirror.url, "Sec-Fetch-Site": "same-origin"}, timeout=60
    )
    assert same.status_code == 200, same.text
    report = same.json()
    assert report["digest"] == image.digest and report["blobs_fetched"] == len(image.blobs)
    mirror.wait_for_tag(f"{HUB}/{image.name}", image.tag)
    mirror.wait_for_links(f"{HUB}/{image.name}", set(image.blob_digests))


def test_with_a_policy_anonymous_sees_only_what_rules_allow_and_cannot_warm_or_delete(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    small_image: PushedImage,
    multi_platform_image: PushedImage,
    tmp_path: Path,
) -> None:
    allowed = f"{HUB}/{small_image.name}"
    rules = [
        "request.action in ['ui-asset', 'ui-config', 'list-repositories', 'list-namespaces']",
        "request.action in ['readyz', 'metrics']",
        "has(request.namespace) && request.namespace == '"
        + allowed
        + "' && request.action in ['list-tags', 'list-revisions', 'get-manifest', 'get-blob']",
        "identity.username == 'admin'",
    ]
    mirror = start(
        mirror_factory,
        upstream,
        global_={"access_policy": {"default": "deny", "rules": rules}},
        extra={"auth": {"identity": identities({"admin": "admin-password"})}},
    )
    admin = basic("admin", "admin-password")
    for image in (small_image, multi_platform_image):
        skopeo_copy(
            f"{mirror.host_port}/{HUB}/{image.name}:{image.tag}",
            tmp_path / image.name,
            creds=("admin", "admin-password"),
            all_images=True,
        )
        mirror.wait_for_tag(f"{HUB}/{image.name}", image.tag)

    listed = api(mirror, f"/v2/_angos/namespaces/list?repository={HUB}")
    assert [entry["name"] for entry in listed["namespaces"]] == [allowed]
    assert api(mirror, "/v2/_angos/repositories/list")["repositories"][0]["namespace_count"] == 1
    full = api(mirror, f"/v2/_angos/namespaces/list?repository={HUB}", headers=admin)
    assert full["total"] == 2
    hidden = mirror.get(f"/{HUB}/{multi_platform_image.name}")
    assert hidden.status_code == 401 and hidden.headers["WWW-Authenticate"].startswith("Basic")
    assert multi_platform_image.digest not in hidden.text
    page = mirror.get(f"/{allowed}")
    assert page.status_code == 200 and small_image.digest in page.text
    assert "data-delete" not in page.text and "data-warm" not in page.text
    assert mirror.get("/_cache").status_code == 401  # cache-status is not granted

    mark = upstream.mark()
    warm = f"{mirror.url}/v2/{allowed}/_angos/warm/{small_image.tag}"
    assert requests.post(warm, timeout=30).status_code == 401
    delete = f"{mirror.url}/v2/{allowed}/manifests/{small_image.tag}"
    assert requests.delete(delete, timeout=30).status_code == 401
    assert tags_in_storage(mirror, allowed) == {small_image.tag}
    assert upstream.settled_requests_since(mark) == []

    as_admin = mirror.get(f"/{allowed}", headers=admin)
    assert "data-delete" in as_admin.text and "data-warm" in as_admin.text
    assert requests.post(warm, headers=admin, timeout=60).status_code == 200
    assert requests.delete(delete, headers=admin, timeout=30).status_code == 202
    poll_until(lambda: tags_in_storage(mirror, allowed) == set(), 30, what="the tag deleted")


def test_without_ui_enabled_there_is_no_ui_and_a_ui_oidc_table_stops_start_up(
    mirror_factory: MirrorFactory, upstream: Distribution, tmp_path: Path
) -> None:
    mirror = mirror_factory({HUB: {"upstream": [upstream_entry(upstream)]}}, global_=ALLOW)
    for path in ("/", f"/{HUB}", "/_cache", "/v2/_angos/ui/config", "/_ui/static/ui.css"):
        response = mirror.get(path)
        assert response.status_code == 404, path
        assert response.json()["errors"][0]["code"] in ("NOT_FOUND", "NAME_UNKNOWN"), path
    config = mirror_config(
        tmp_path, {HUB: {"upstream": [upstream_entry(upstream)]}}, port=free_port()
    )
    for ui, code, text in (
        ({"enabled": True, "name": "Cache"}, 0, "configuration OK"),
        ({"enabled": True, "oidc": {"provider": "x", "client_id": "y"}}, 2, "ui.oidc"),
        ({"enabled": "yes"}, 2, "ui.enabled"),
    ):
        config_path = tmp_path / "ui.toml"
        config_path.write_bytes(tomli_w.dumps({**config, "ui": ui}).encode())
        result = subprocess.run(
            [*REGISTRY_COMMAND, "-c", str(config_path), "check-config"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == code, result.stderr
        assert text in result.stdout + result.stderr
        assert "key ui" not in result.stderr  # never "not used by a pull-through mirror"


def test_ui_assets_are_served_by_the_registry_with_a_version_and_revalidation(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = start(mirror_factory, upstream)
    page = mirror.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    urls = re.findall(r'(?:href|src)="(/_ui/static/[^"]+)"', page.text)
    assert {u.split("?")[0] for u in urls} == {
        "/_ui/static/favicon.svg",
        "/_ui/static/ui.css",
        "/_ui/static/ui.js",
    }
    assert not re.search(r'(?:href|src)="(?:https?:)?//', page.text)  # nothing from elsewhere
    total = 0
    for url in set(urls):
        asset = mirror.get(url)
        assert asset.status_code == 200 and "immutable" in asset.headers["Cache-Control"]
        total += len(asset.content)
        again = mirror.get(url, headers={"If-None-Match": asset.headers["ETag"]})
        assert again.status_code == 304
    assert total < 64 * 1024  # small
    assert mirror.get("/_ui/static/../../config.toml").status_code == 404
