"""The web UI in a real browser (Debian's chromium through Playwright), against a registry
whose cache skopeo filled from CNCF Distribution. Each view is compared with what storage
holds, read straight from the registry's folder; the actions are checked by what they
did: the upstream's access log, the files in storage, the Redis dead-letter stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect
from simple_registry.common.config import RedisQueueSettings
from simple_registry.common.queue import CacheJob, JobKind
from simple_registry.common.queue.redis import RedisQueue
from simple_registry.frontend.ui.pages import human_bytes

from tests.fixtures.browser import (
    PHONE,
    BrowserLog,
    off_the_browsers_thread,
    open_page,
    screenshot,
)
from tests.fixtures.distribution import Distribution
from tests.fixtures.faulty_proxy import FaultyProxy
from tests.fixtures.images import PushedImage
from tests.fixtures.job_key import TEST_JOB_KEY
from tests.fixtures.mirror import (
    Mirror,
    MirrorFactory,
    metric_sample,
    mirror_config,
    upstream_entry,
)
from tests.fixtures.oci import (
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    build_manifest,
    canonical_json,
    make_layer,
)
from tests.fixtures.plugin import PushedImageCache, pusher_for
from tests.fixtures.ports import free_port, poll_until
from tests.fixtures.redis_server import RedisServer, enqueue_jobs
from tests.fixtures.skopeo import skopeo_copy

HUB = "hub"  # immutable tags (but `latest`)
QUAY = "quay"  # mutable tags
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
ONLOAD = '"onload="window.__xss=3" x="'
# Tags cannot hold these characters; one written into storage by hand still must not run.
TAG_XSS = '"><img src=x onerror=window.__xss=4>'
SBOM_TYPE = "application/spdx+json"
# Angos's `default = "allow"`: every action (the legacy `default_allow` grants reads only).
ALLOW = {"access_policy": {"default": "allow"}}


def ui_config(root: Path, upstream: Distribution, **extra: Any) -> dict[str, Any]:
    entry = upstream_entry(upstream)
    config = mirror_config(
        root,
        {
            HUB: {
                "immutable_tags": True,
                "immutable_tags_exclusions": ["^latest$"],
                "namespace": "docker.io",
                "upstream": [entry],
            },
            QUAY: {"upstream": [entry]},
        },
        port=free_port(),
        global_=ALLOW,
        extra={"ui": {"enabled": True, "name": "Test <Registry>", "stats_interval_secs": 0.5}},
    )
    config.update(extra)
    return config


# -- what storage holds, read from the folder (not through the registry) -------------------


@dataclass
class Storage:
    root: Path

    def images(self, repository: str) -> set[str]:
        base = self.root / "repositories"
        return {
            str(folder.parent.relative_to(base))
            for folder in (base / repository).rglob("_manifests")
            if (folder / "revisions").exists()
        }

    def tags(self, name: str) -> set[str]:
        folder = self.root / "repositories" / name / "_manifests" / "tags"
        return {p.name for p in folder.iterdir()} if folder.exists() else set()

    def tag_digest(self, name: str, tag: str) -> str:
        path = self.root / "repositories" / name / "_manifests" / "tags" / tag
        return str(json.loads(path.read_bytes())["digest"])

    def revisions(self, name: str) -> set[str]:
        folder = self.root / "repositories" / name / "_manifests" / "revisions"
        return {f"{p.parent.name}:{p.name}" for p in folder.glob("*/*")}

    def layer_bytes(self, name: str) -> int:
        folder = self.root / "repositories" / name / "_layers"
        return sum(json.loads(p.read_bytes())["size"] for p in folder.glob("*/*"))

    def blob(self, digest: str) -> bytes:
        algorithm, _, encoded = digest.partition(":")
        return (self.root / "blobs" / algorithm / encoded[:2] / encoded).read_bytes()

    def manifest(self, digest: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.blob(digest))
        return document

    def has_blob(self, digest: str) -> bool:
        algorithm, _, encoded = digest.partition(":")
        return (self.root / "blobs" / algorithm / encoded[:2] / encoded).exists()


@dataclass
class Filled:
    mirror: Mirror
    storage: Storage
    small: PushedImage
    index: PushedImage
    docker_list: PushedImage
    crafted: PushedImage
    crafted_digest: str
    referrer_digest: str
    tmp: Path


def push_crafted(upstream: Distribution, name: str) -> tuple[PushedImage, str]:
    """An image whose annotations and config label are markup, and an SBOM referring to it
    (its `subject`); returns the image and the referrer's digest."""
    pusher = pusher_for(upstream)
    try:
        base = build_manifest(
            [make_layer({"crafted.txt": b"crafted\n"}, OCI_LAYER_GZIP)], labels={"evil": XSS}
        )
        document = json.loads(base.raw)
        document["annotations"] = {"org.example.note": XSS, "org.example.title": ONLOAD}
        raw = canonical_json(document)
        for blob in base.blobs:
            pusher.push_blob(name, blob)
        digest = pusher.push_manifest(name, "crafted", raw, OCI_MANIFEST)
        empty = Blob.of(b"{}", "application/vnd.oci.empty.v1+json")
        sbom = Blob.of(b'{"spdxVersion":"SPDX-2.3"}', SBOM_TYPE)
        for blob in (empty, sbom):
            pusher.push_blob(name, blob)
        referrer = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": SBOM_TYPE,
                "config": empty.descriptor(),
                "layers": [sbom.descriptor()],
                "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw)},
                "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
            }
        )
        referrer_digest = pusher.push_manifest(name, "sbom", referrer, OCI_MANIFEST)
    finally:
        pusher.client.close()
    image = PushedImage(pusher.host_port, name, "crafted", dataclasses.replace(base, raw=raw))
    assert image.digest == digest
    return image, referrer_digest


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
) -> Iterator[Filled]:
    """One registry, its cache filled by skopeo pulls (and one referrer by plain GETs)."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    mirror = Mirror(tmp, ui_config(tmp, upstream), pick_port=True).start()
    try:
        small = pushed_images.get(upstream, "small")
        index = pushed_images.get(upstream, "index")
        docker_list = pushed_images.get(upstream, "docker_list")
        crafted, referrer_digest = push_crafted(upstream, "ui/crafted")
        host = mirror.host_port
        skopeo_copy(f"{host}/{HUB}/{small.name}:{small.tag}", tmp / "small")
        skopeo_copy(f"{host}/{HUB}/{index.name}:{index.tag}", tmp / "index", all_images=True)
        skopeo_copy(f"{host}/{QUAY}/{docker_list.name}:latest", tmp / "list", all_images=True)
        skopeo_copy(f"{host}/{HUB}/ui/crafted:crafted", tmp / "crafted")
        sbom = mirror.get(
            f"/v2/{HUB}/ui/crafted/manifests/{referrer_digest}",
            headers={"Accept": OCI_MANIFEST},
        )
        assert sbom.status_code == 200
        for blob in json.loads(sbom.content)["layers"]:
            assert mirror.get(f"/v2/{HUB}/ui/crafted/blobs/{blob['digest']}").status_code == 200
        storage = Storage(mirror.data_root)
        crafted_digest = crafted.digest
        everything = {
            small.digest,
            index.digest,
            docker_list.digest,
            crafted_digest,
            referrer_digest,
            *small.blob_digests,
            *index.blob_digests,
            *docker_list.blob_digests,
            *crafted.blob_digests,
        }
        mirror.wait_for_blobs(everything)
        for name, tag in (
            (f"{HUB}/{small.name}", small.tag),
            (f"{HUB}/{index.name}", index.tag),
            (f"{QUAY}/{docker_list.name}", "latest"),
            (f"{HUB}/ui/crafted", "crafted"),
        ):
            mirror.wait_for_tag(name, tag)
        poll_until(
            lambda: referrer_digest in storage.revisions(f"{HUB}/ui/crafted"),
            30,
            what="the referrer's revision",
        )
        mirror.wait_for_links(f"{HUB}/{index.name}", set(index.blob_digests))
        # A tag no client could push, written into storage by hand.
        tags = storage.root / "repositories" / HUB / "ui" / "crafted" / "_manifests" / "tags"
        (tags / TAG_XSS).write_bytes((tags / "crafted").read_bytes())
        yield Filled(
            mirror,
            storage,
            small,
            index,
            docker_list,
            crafted,
            crafted_digest,
            referrer_digest,
            tmp,
        )
    finally:
        mirror.stop()
        problems = mirror.problems()
        if problems:
            pytest.fail("the registry misbehaved:\n" + "\n\n".join(problems), pytrace=False)


def visit(page: Page, filled: Filled, path: str) -> None:
    response = page.goto(filled.mirror.url + path)
    assert response is not None and response.status == 200, (path, response and response.status)


def row_of(page: Page, text: str) -> Any:
    return page.locator("tbody tr").filter(has=page.get_by_role("link", name=text, exact=True))


def clean(log: BrowserLog) -> None:
    assert log.errors == [] and log.dialogs == [] and log.foreign_requests == []


# -- browsing ------------------------------------------------------------------------------


def test_the_repositories_page_lists_each_repository_with_the_images_storage_holds(
    filled: Filled, page: Page, browser_log: BrowserLog, tmp_path: Path
) -> None:
    visit(page, filled, "/")
    expect(page.locator("h1")).to_have_text("Repositories")
    assert page.title() == "Repositories · Test <Registry>"  # the configured name, as text
    for repository in (HUB, QUAY):
        row = row_of(page, repository)
        expect(row).to_have_count(1)
        images = filled.storage.images(repository)
        assert row.locator("td").nth(3).inner_text() == str(len(images))
        tags = sum(len(filled.storage.tags(name)) for name in images)
        if repository == HUB:
            tags -= 1  # the hand-written tag is no tag (the grammar refuses it)
        assert row.locator("td").nth(4).inner_text() == str(tags)
    expect(row_of(page, HUB).locator(".badge", has_text="immutable")).to_have_count(1)
    expect(row_of(page, QUAY).locator(".badge", has_text="mutable")).to_have_count(1)
    expect(row_of(page, HUB)).to_contain_text("ns=docker.io")
    screenshot(page, "repositories", tmp_path)
    page.get_by_role("link", name=HUB, exact=True).click()
    expect(page).to_have_url(filled.mirror.url + f"/{HUB}")
    clean(browser_log)


def test_a_repository_page_lists_its_images_with_counts_and_sizes_from_storage(
    filled: Filled, page: Page, browser_log: BrowserLog, tmp_path: Path
) -> None:
    visit(page, filled, f"/{HUB}")
    names = filled.storage.images(HUB)
    shown = {f"{HUB}/{text}" for text in page.locator("tbody tr td.name a").all_inner_texts()}
    assert shown == names
    for name in names:
        row = row_of(page, name[len(HUB) + 1 :])
        cells = row.locator("td")
        assert cells.nth(1).inner_text() == str(len(filled.storage.tags(name) - {TAG_XSS}))
        assert cells.nth(2).inner_text() == str(len(filled.storage.revisions(name)))
        assert cells.nth(3).inner_text() == human_bytes(filled.storage.layer_bytes(name))
    screenshot(page, "repository", tmp_path)
    page.get_by_role("link", name=filled.index.name, exact=True).click()
    expect(page).to_have_url(filled.mirror.url + f"/{HUB}/{filled.index.name}")
    expect(page.locator("h1")).to_have_text(f"{HUB}/{filled.index.name}")
    clean(browser_log)


def test_an_image_page_shows_its_tags_and_the_index_with_its_platforms_as_children(
    filled: Filled, page: Page, browser_log: BrowserLog, tmp_path: Path
) -> None:
    name = f"{HUB}/{filled.index.name}"
    visit(page, filled, f"/{name}")
    tags = page.locator("#tags ~ .table-wrap").first.locator("tbody tr td.name a")
    assert set(tags.all_inner_texts()) == filled.storage.tags(name)
    index_digest = filled.storage.tag_digest(name, filled.index.tag)
    index = filled.storage.manifest(index_digest)
    root = page.locator("ul.tree > li").first
    expect(root.locator(".node").first.locator(".kind")).to_have_text("OCI index")
    assert root.locator(".node").first.locator("button.copy").get_attribute("data-copy") == (
        index_digest
    )
    children = root.locator("ul > li > .node")
    expected = {
        (m["digest"], f"{m['platform']['os']}/{m['platform']['architecture']}")
        for m in index["manifests"]
    }
    shown = {
        (
            child.locator("button.copy").get_attribute("data-copy"),
            child.locator(".badge").first.inner_text(),
        )
        for child in children.all()
    }
    assert shown == expected
    assert {d for d, _ in expected} <= filled.storage.revisions(name)
    screenshot(page, "image", tmp_path)
    children.first.locator("a.kind").click()
    expect(page).to_have_url(re.compile(r"@sha256:"))
    clean(browser_log)


def test_a_manifest_page_shows_layers_config_annotations_and_referrers_from_storage(
    filled: Filled, page: Page, browser_log: BrowserLog, tmp_path: Path
) -> None:
    name = f"{HUB}/ui/crafted"
    visit(page, filled, f"/{name}:crafted")
    stored = filled.storage.manifest(filled.crafted_digest)
    layer_rows = page.locator("h2:text-is('Layers') + .table-wrap tbody tr")
    assert [
        (
            row.locator("button.copy").get_attribute("data-copy"),
            row.locator("td").nth(3).inner_text(),
        )
        for row in layer_rows.all()
    ] == [(layer["digest"], human_bytes(layer["size"])) for layer in stored["layers"]]
    expect(layer_rows.first).to_contain_text("cached")
    config = json.loads(filled.storage.blob(stored["config"]["digest"]))
    facts = page.locator("h2:text-is('Config') + .panel")
    expect(facts).to_contain_text(f"{config['os']}/{config['architecture']}")
    expect(facts).to_contain_text(" ".join(config["config"]["Cmd"]))
    for key, value in stored["annotations"].items():
        assert page.locator(f"td[data-annotation='{key}']").inner_text() == value
    referrers = page.locator("h2:text-is('Referrers') + p + .table-wrap tbody tr")
    expect(referrers).to_have_count(1)
    assert referrers.locator("button.copy").get_attribute("data-copy") == filled.referrer_digest
    expect(referrers).to_contain_text(SBOM_TYPE)
    screenshot(page, "manifest", tmp_path)
    # An index's child names its parent index.
    index_name = f"{HUB}/{filled.index.name}"
    child = filled.index.manifests[0]
    visit(page, filled, f"/{index_name}@{child.digest}")
    parent = page.locator("dt:text-is('Parent index') + dd a")
    assert parent.get_attribute("href") == f"/{index_name}@{filled.index.digest}"
    expect(page.locator("dt:text-is('Platform') + dd")).to_have_text(
        f"{child.platform.os}/{child.platform.architecture}"
    )
    clean(browser_log)


def test_clicking_a_digest_copies_it(filled: Filled, page: Page, browser_log: BrowserLog) -> None:
    name = f"{HUB}/{filled.small.name}"
    visit(page, filled, f"/{name}")
    digest = filled.storage.tag_digest(name, filled.small.tag)
    button = page.locator(f"button.copy[data-copy='{digest}']").first
    button.click()
    expect(page.locator("[data-toast]")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == digest
    clean(browser_log)


def test_markup_in_an_annotation_a_label_and_a_tag_shows_as_text_and_never_runs(
    filled: Filled, page: Page, browser_log: BrowserLog
) -> None:
    name = f"{HUB}/ui/crafted"
    for path in (f"/{name}:crafted", f"/{name}", f"/{HUB}", "/"):
        visit(page, filled, path)
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("img[src='x']").count() == 0, path
        assert page.locator("script").count() == 1, path  # ui.js alone
    visit(page, filled, f"/{name}:crafted")
    assert page.locator("td[data-annotation='org.example.note']").inner_text() == XSS
    assert page.locator("td[data-annotation='org.example.title']").inner_text() == ONLOAD
    expect(page.locator("dt:has(code:text-is('evil')) + dd")).to_have_text(XSS)
    visit(page, filled, f"/{name}")
    link = page.locator("#tags ~ .table-wrap").first.get_by_role("link", name=TAG_XSS, exact=True)
    expect(link).to_have_count(1)
    assert (
        link.get_attribute("href")
        == f"/{name}:%22%3E%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D4%3E"
    )
    assert page.evaluate("window.__xss") is None
    clean(browser_log)


def test_keyboard_alone_moves_through_rows_filters_and_switches_the_theme(
    filled: Filled, page: Page, browser_log: BrowserLog
) -> None:
    visit(page, filled, f"/{HUB}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Escape")
    page.locator("main").click(position={"x": 1, "y": 1})
    first = sorted(filled.storage.images(HUB))[0]
    page.keyboard.press("j")
    expect(page.locator("tr.current")).to_have_count(1)
    page.keyboard.press("Enter")
    expect(page).to_have_url(filled.mirror.url + f"/{first}")
    page.keyboard.press("g")
    page.keyboard.press("h")
    expect(page).to_have_url(filled.mirror.url + "/")
    visit(page, filled, f"/{HUB}")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("index")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?q=index"))
    assert page.locator("tbody tr td.name a").all_inner_texts() == [filled.index.name]
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.keyboard.press("t")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark != light and page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.keyboard.press("?")
    expect(page.locator("dialog#help")).to_be_visible()
    clean(browser_log)


def test_the_dark_theme_follows_the_systems_preference(
    filled: Filled, browser: Browser, browser_log: BrowserLog, tmp_path: Path
) -> None:
    light_page = open_page(browser, browser_log)
    dark_page = open_page(browser, browser_log, dark=True)
    try:
        path = f"/{HUB}/{filled.index.name}:{filled.index.tag}"
        colors = []
        for opened in (light_page, dark_page):
            opened.goto(filled.mirror.url + path)
            colors.append(opened.evaluate("getComputedStyle(document.body).backgroundColor"))
        assert colors == ["rgb(247, 248, 250)", "rgb(18, 22, 29)"]
        screenshot(dark_page, "manifest-dark", tmp_path)
    finally:
        light_page.context.close()
        dark_page.context.close()
    clean(browser_log)


def test_every_page_fits_a_phone_screen(
    filled: Filled, browser: Browser, browser_log: BrowserLog, tmp_path: Path
) -> None:
    phone = open_page(browser, browser_log, viewport=PHONE)
    try:
        for path in (
            "/",
            f"/{HUB}",
            f"/{HUB}/{filled.index.name}",
            f"/{HUB}/ui/crafted:crafted",
            "/_cache",
        ):
            phone.goto(filled.mirror.url + path)
            overflow = phone.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (path, overflow)
        phone.goto(filled.mirror.url + f"/{HUB}")
        screenshot(phone, "repository-phone", tmp_path)
    finally:
        phone.context.close()
    clean(browser_log)


def test_the_cache_page_shows_this_processs_counters_and_its_recent_pulls(
    filled: Filled, page: Page, browser_log: BrowserLog, tmp_path: Path
) -> None:
    metrics = filled.mirror.metrics()
    hits = sum(
        metric_sample(metrics, "registry_cache_lookups_total", result=result)
        for result in ("hit", "revalidated", "stale")
    )
    misses = metric_sample(metrics, "registry_cache_lookups_total", result="miss")
    visit(page, filled, "/_cache")
    card = page.locator(".card", has=page.locator(".label", has_text="Hit ratio, last hour"))
    expect(card.locator(".sub")).to_contain_text(f"{int(hits)} hits · {int(misses)} misses")
    expect(page.locator("[data-stat=hour-ratio]")).to_have_text(
        f"{hits / (hits + misses) * 100:.1f} %"
    )
    pulls = page.locator("#pulls + .table-wrap tbody tr")
    expect(pulls.filter(has_text=f"{HUB}/{filled.small.name}:{filled.small.tag}")).to_have_count(1)
    upstreams = page.locator("#upstreams + .table-wrap tbody tr")
    expect(upstreams).to_have_count(2)
    expect(upstreams.first.locator(".badge").first).to_have_text("closed")
    usage = filled.storage.root / "_lifecycle" / "usage"
    expect(page.locator("[data-stat=usage]")).to_have_text(
        human_bytes(json.loads(usage.read_bytes())["total_bytes"]) if usage.exists() else "\u2013"
    )
    expect(page.locator("svg.chart")).to_have_count(4)
    screenshot(page, "cache", tmp_path)
    clean(browser_log)


# -- acting --------------------------------------------------------------------------------


def test_warming_from_the_ui_caches_every_platform_so_the_next_pull_costs_the_upstream_nothing(
    filled: Filled,
    upstream: Distribution,
    page: Page,
    browser_log: BrowserLog,
    tmp_path: Path,
) -> None:
    image = pusher_for(upstream).multi_platform_index("ui/warm-me", "1.0", salt="warm")
    name = f"{HUB}/{image.name}"
    assert filled.storage.tags(name) == set()
    visit(page, filled, f"/{HUB}")
    form = page.locator("form[data-warm]")
    form.get_by_label("Image").fill(image.name)
    form.get_by_label("Tag").fill("1.0")
    form.get_by_role("button", name="Warm").click()
    expect(form.locator("[data-result]")).to_contain_text(f"Warmed {name}:1.0", timeout=60_000)
    expect(form.locator("[data-result]")).to_contain_text("3 manifest(s)")
    children = {m.digest for m in image.manifests}
    poll_until(
        lambda: (
            filled.storage.tags(name) == {"1.0"}
            and filled.storage.revisions(name) == {image.digest, *children}
            and all(filled.storage.has_blob(d) for d in image.blob_digests)
        ),
        60,
        what="the warmed image in storage",
    )
    filled.mirror.wait_for_links(name, set(image.blob_digests))
    mark = upstream.mark()
    skopeo_copy(f"{filled.mirror.host_port}/{name}:1.0", tmp_path / "pulled", all_images=True)
    assert upstream.settled_requests_since(mark) == []
    clean(browser_log)


def test_deleting_a_tag_from_the_ui_removes_it_from_storage(
    filled: Filled, page: Page, browser_log: BrowserLog
) -> None:
    name = f"{QUAY}/{filled.docker_list.name}"
    assert filled.storage.tags(name) == {"latest"}
    visit(page, filled, f"/{name}")
    row = page.locator("#tags ~ .table-wrap").first.locator("tbody tr", has_text="latest")
    row.get_by_role("button", name="Delete").click()
    poll_until(lambda: filled.storage.tags(name) == set(), 30, what="the tag deleted")
    expect(page).to_have_url(filled.mirror.url + f"/{name}")
    assert filled.storage.tags(f"{HUB}/{filled.small.name}") == {filled.small.tag}
    clean(browser_log)


def test_a_dead_letter_shows_its_reason_and_retrying_it_stores_the_blob(
    tmp_path: Path,
    upstream: Distribution,
    mirror_factory: MirrorFactory,
    redis_server: RedisServer,
    page: Page,
    browser_log: BrowserLog,
) -> None:
    mirror = mirror_factory(
        {HUB: {"upstream": [upstream_entry(upstream)]}},
        redis_url=redis_server.url,
        global_=ALLOW,
        extra={"ui": {"enabled": True}, "queue": {"redis": {"max_attempts": 1}}},
    )
    blob = Blob.of(b"pushed only after the job failed\n", "application/octet-stream")
    name = "ui/dead-letter"
    off_the_browsers_thread(
        enqueue_jobs,
        redis_server.url,
        [CacheJob(JobKind.BLOB, HUB, name, blob.digest, size=blob.size)],
    )
    queue = RedisQueue(RedisQueueSettings(url=redis_server.url, job_signing_key=TEST_JOB_KEY))

    def dead_letters() -> list[Any]:
        async def read() -> list[Any]:
            await queue.open()
            try:
                return await queue.dead_letter_page(10)
            finally:
                await queue.close()

        return off_the_browsers_thread(asyncio.run, read())

    poll_until(lambda: len(dead_letters()) == 1, 60, what="the job dead-lettered")
    letter = dead_letters()[0]
    page.goto(mirror.url + "/_cache")
    row = page.locator(f"tr[data-letter='{letter.id}']")
    expect(row.locator("[data-reason]")).to_have_text(letter.reason)
    expect(row).to_contain_text(f"{HUB}/{name}")
    expect(page.locator("[data-stat=dead]")).to_have_text("1")
    screenshot(page, "cache-dead-letter", tmp_path)

    pusher = pusher_for(upstream)
    pusher.push_blob(name, blob)
    pusher.client.close()
    row.get_by_role("button", name="Retry").click()
    expect(row).to_have_count(0)
    storage = Storage(mirror.data_root)
    poll_until(lambda: storage.has_blob(blob.digest), 60, what="the retried blob stored")
    mirror.wait_for_links(f"{HUB}/{name}", {blob.digest})
    assert dead_letters() == []
    assert storage.blob(blob.digest) == blob.read()
    clean(browser_log)


def test_the_cache_page_shows_a_rate_limit_its_retry_after_and_a_broken_upstreams_error(
    tmp_path: Path,
    upstream: Distribution,
    small_image: PushedImage,
    mirror_factory: MirrorFactory,
    page: Page,
    browser_log: BrowserLog,
) -> None:
    limited = off_the_browsers_thread(FaultyProxy(upstream.url).start)
    broken = off_the_browsers_thread(FaultyProxy(upstream.url).start)
    try:
        limited.faults.extra_headers = {"ratelimit-remaining": "76;w=21600"}
        mirror = mirror_factory(
            {HUB: {"upstream": [{"url": limited.url}]}, QUAY: {"upstream": [{"url": broken.url}]}},
            global_={**ALLOW, "upstream_failure_threshold": 1, "upstream_cooldown_secs": 300},
            extra={"ui": {"enabled": True}},
        )
        name, tag = small_image.name, small_image.tag
        assert mirror.get(f"/v2/{HUB}/{name}/manifests/{tag}").status_code == 200
        limited.faults.answer = (429, {"Retry-After": "120"})
        assert mirror.get(f"/v2/{HUB}/{name}/manifests/other").status_code == 429
        broken.faults.answer = (503, {})
        assert mirror.get(f"/v2/{QUAY}/{name}/manifests/{tag}").status_code >= 500

        page.goto(mirror.url + "/_cache")
        rows = page.locator("#upstreams + .table-wrap tbody tr")
        hub = rows.filter(has_text=limited.url)
        expect(hub.locator("td").nth(4)).to_have_text("76")
        expect(hub.locator("td").nth(5)).to_contain_text("rate limited")
        expect(hub.locator("td").nth(5)).to_contain_text(re.compile(r"^(1\d\d|[2-9]\d) s|^2 min"))
        quay = rows.filter(has_text=broken.url)
        expect(quay.locator(".badge").first).to_have_text("open")
        expect(quay.locator("[data-last-error]")).to_contain_text("503")
        status = requests.get(mirror.url + "/v2/_angos/cache/status", timeout=30).json()
        by_url = {u["url"]: u for u in status["upstreams"]}
        assert by_url[limited.url]["ratelimit_remaining"] == 76
        assert by_url[limited.url]["rate_limited"] is True
        assert 60 < by_url[limited.url]["retry_after_secs"] <= 120
        assert by_url[broken.url]["state"] == "open"
        assert "503" in by_url[broken.url]["last_error"]
        screenshot(page, "cache-upstreams", tmp_path)
    finally:
        off_the_browsers_thread(limited.stop)
        off_the_browsers_thread(broken.stop)
    clean(browser_log)
