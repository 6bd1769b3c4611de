"""The cache lifecycle on real storage, filesystem and S3 (moto) alike: the storage
functions it adds (scans, batch deletes, pull times, release marks, usage, the invalidation
token, the lease), and prune / scrub / DELETE carried out on seeded content.

These run the lifecycle in-process against the object stores of the storage suite (its
`objects` fixture); no frontend runs here, so the invalidation hold's wait is set to zero.
The same runs through live processes are in test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import pytest
from simple_registry.cacher.lifecycle import lock as lock_module
from simple_registry.cacher.lifecycle.deletions import execute
from simple_registry.cacher.lifecycle.gc import Collection
from simple_registry.cacher.lifecycle.inventory import take_inventory
from simple_registry.cacher.lifecycle.lock import LockBusy, StorageLease
from simple_registry.cacher.lifecycle.state import ReferenceReader
from simple_registry.cacher.lifecycle.tasks import Lifecycle
from simple_registry.common.config import Settings, parse_settings
from simple_registry.common.config.settings import EvictionSettings
from simple_registry.common.metrics import Metrics
from simple_registry.common.oci import Digest, Tag
from simple_registry.common.routing import Router
from simple_registry.common.storage import RegistryStorage, invalidation
from simple_registry.common.storage.fs import FsObjectStore
from simple_registry.common.storage.keys import blob_key
from simple_registry.common.storage.objects import ObjectStore
from simple_registry.common.storage.records import StorageUsage
from simple_registry.frontend.pullthrough.deletes import DeleteService

from tests import test_storage as suite
from tests.fixtures.lifecycle import Seeded, blob_bytes, dangling, seed_index, seed_manifest

pytest_plugins = ["tests.fixtures.s3_server"]

# The storage suite's fixtures: every case below runs on the filesystem and on S3.
objects = suite.objects
storage = suite.storage

NAME = "hub/library/app"
KiB = 1024


@pytest.fixture(autouse=True)
def no_frontends_to_wait_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invalidation, "SETTLE_SECS", 0.0)


def settings(tmp_path: Path, *, rules: list[str] | None = None, **eviction: Any) -> Settings:
    data: dict[str, Any] = {
        "global": {"update_pull_time": True},
        "blob_store": {"fs": {"root_dir": str(tmp_path / "unused")}},
        "repository": {"hub": {"upstream": [{"url": "https://registry-1.docker.io"}]}},
    }
    if rules is not None:
        data["global"]["retention_policy"] = {"rules": rules}
    loaded = parse_settings(data)
    return dataclasses.replace(
        loaded, eviction=EvictionSettings(**{"blob_grace_secs": 0.0, **eviction})
    )


def lifecycle(storage: RegistryStorage, tmp_path: Path, **options: Any) -> Lifecycle:
    return Lifecycle(storage, settings(tmp_path, **options), Metrics())


async def stored(storage: RegistryStorage) -> set[str]:
    return set((await take_inventory(storage.objects)).blobs)


async def image(storage: RegistryStorage, tag: str, *layers: bytes, age: float = 0.0) -> Seeded:
    return await seed_manifest(storage, NAME, list(layers), tag=tag, updated_at=time.time() - age)


# -- the storage functions ------------------------------------------------------------------


async def test_a_scan_lists_every_key_under_a_prefix_with_its_size_and_write_time(
    objects: ObjectStore,
) -> None:
    before = time.time() - 2
    for index in range(3):
        await objects.put(f"a/{index}/k", b"x" * (index + 1))
    await objects.put("b/other", b"zz")
    found = {info.key: info async for info in objects.scan("a/")}
    assert {key: info.size for key, info in found.items()} == {"a/0/k": 1, "a/1/k": 2, "a/2/k": 3}
    assert all(before <= info.modified <= time.time() + 2 for info in found.values())
    assert [info async for info in objects.scan("nothing/")] == []


async def test_delete_many_removes_every_key_given_across_batches_and_ignores_missing_ones(
    objects: ObjectStore,
) -> None:
    keys = [f"many/{index:04d}" for index in range(1003)]  # more than one S3 batch of 1000
    await asyncio.gather(*(objects.put(key, b"1") for key in keys[:20]))
    for key in keys[20:]:
        await objects.put(key, b"1")
    await objects.put("keep/me", b"1")
    await objects.delete_many([*keys, "never/written"])
    assert [key async for key in objects.list("many/")] == []
    assert [key async for key in objects.list("keep/")] == ["keep/me"]


async def test_pull_times_release_marks_usage_and_the_invalidation_token_round_trip(
    storage: RegistryStorage,
) -> None:
    digest = Digest.of_bytes(b"m")
    assert await storage.get_pull_time(NAME, Tag("1.0")) is None
    await storage.put_pull_time(NAME, Tag("1.0"), 123.5)
    await storage.put_pull_time(NAME, digest, 456.0)
    assert await storage.get_pull_time(NAME, Tag("1.0")) == 123.5
    assert await storage.get_pull_time(NAME, digest) == 456.0
    # Pull times do not make a repository or a tag appear.
    assert await storage.list_repositories() == []
    assert await storage.list_tags(NAME) == []

    assert await storage.get_released(digest) is None
    await storage.mark_released(digest, "budget", 99.0)
    released = await storage.get_released(digest)
    assert released is not None and (released.at, released.reason) == (99.0, "budget")

    assert await storage.get_usage() is None
    usage = StorageUsage(total_bytes=10, blobs=2, manifests=1, tags=1, measured_at=5.0)
    await storage.put_usage(usage)
    assert await storage.get_usage() == usage

    assert await storage.get_invalidation() is None
    await invalidation.announce(storage)
    first = await storage.get_invalidation()
    await invalidation.announce(storage)
    second = await storage.get_invalidation()
    assert first is not None and second is not None and first.token != second.token


async def test_the_storage_lease_admits_one_holder_until_it_expires_or_is_released(
    storage: RegistryStorage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lock_module, "LEASE_SETTLE_SECS", 0.0)
    first, second = StorageLease(storage), StorageLease(storage)
    first.owner, second.owner = "first", "second"
    async with first.held():
        with pytest.raises(LockBusy):
            async with second.held():
                pass
    async with second.held():  # released by the first
        assert await second.refresh()
    monkeypatch.setattr(lock_module, "TTL_SECS", 0.0)
    assert await first.take()  # an expired lease is taken over
    assert await second.take()
    assert not await first.refresh()


# -- prune ----------------------------------------------------------------------------------


async def test_the_budget_removes_the_least_recently_pulled_image_and_keeps_a_shared_layer(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    base = blob_bytes("base", 40 * KiB)
    old = await image(storage, "old", base, blob_bytes("old", 30 * KiB), age=300)
    new = await image(storage, "new", base, blob_bytes("new", 30 * KiB), age=200)
    recent = await image(storage, "recent", blob_bytes("recent", 30 * KiB), age=100)
    await storage.put_pull_time(NAME, Tag("old"), time.time() - 50)  # pulled after the others
    await storage.put_pull_time(NAME, Tag("new"), time.time() - 150)
    total = (await take_inventory(storage.objects)).blob_bytes
    budget = total - 10 * KiB  # one image must go; "new" is the least recently used

    report = await lifecycle(storage, tmp_path, max_size=budget).prune()

    assert await storage.list_tags(NAME) == ["old", "recent"]
    assert await storage.get_revision(NAME, Digest.parse(new.digest)) is None
    remaining = await stored(storage)
    going = set(new.blobs) - set(old.blobs)
    assert remaining == set(old.blobs) | set(recent.blobs)
    assert not going & remaining
    assert report.freed_bytes == sum(new.blobs[d] for d in going)
    assert report.usage_after <= budget
    assert report.evicted == {"budget": report.freed_bytes}
    assert await dangling(storage) == []
    usage = await storage.get_usage()
    assert usage is not None and usage.total_bytes == report.usage_after and usage.tags == 2
    # The layer links of what went went with it; those of the shared base stayed.
    for blob in going:
        assert not await storage.has_layer_link(NAME, Digest.parse(blob))
    assert await storage.has_layer_link(NAME, Digest.of_bytes(base))


async def test_retention_drops_what_no_rule_keeps_and_a_failing_rule_keeps_with_a_warning(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    await image(storage, "latest", blob_bytes("a", 1000))
    await image(storage, "v1.0.0", blob_bytes("b", 1000), age=40 * 86400)
    dev = await image(storage, "dev", blob_bytes("c", 1000), age=40 * 86400)
    rules = ['image.tag == "latest"', 'image.tag.matches("^v[0-9.]+$") && now() > 0']
    report = await lifecycle(storage, tmp_path, rules=rules).prune()
    assert await storage.list_tags(NAME) == ["latest", "v1.0.0"]
    assert set(dev.blobs).isdisjoint(await stored(storage))
    assert report.evicted == {"retention": dev.bytes}

    # A rule that fails on every image keeps them all, and says so.
    failing = ["image.tag.size() > image.missing_field"]
    with pytest.raises(Exception, match=r"unknown: image\.missing_field"):
        lifecycle(storage, tmp_path, rules=failing)
    report = await lifecycle(storage, tmp_path, rules=["image.tag + 1 > 0"]).prune()
    assert await storage.list_tags(NAME) == ["latest", "v1.0.0"]
    assert len(report.warnings) == 2
    assert all("treating as 'retain' (fail-open)" in w for w in report.warnings)


async def test_a_released_blob_waits_out_the_grace_period_then_goes_with_its_reason(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    await image(storage, "keep", blob_bytes("k", 2000))
    gone = await image(storage, "drop", blob_bytes("d", 2000))
    graceful = lifecycle(storage, tmp_path, rules=['image.tag == "keep"'], blob_grace_secs=3600)
    report = await graceful.prune()
    assert await storage.list_tags(NAME) == ["keep"]
    assert set(gone.blobs) <= await stored(storage)  # released, not deleted yet
    assert report.released_bytes == gone.bytes and report.freed_bytes == 0
    for blob in gone.blobs:
        mark = await storage.get_released(Digest.parse(blob))
        assert mark is not None and mark.reason == "retention"

    # The grace passes (here: a second lifecycle without one); scrub deletes them, by reason.
    metrics_before = graceful.metrics.render()
    cleaner = lifecycle(storage, tmp_path)
    report = await cleaner.scrub()
    assert set(gone.blobs).isdisjoint(await stored(storage))
    assert report.evicted == {"retention": gone.bytes}
    assert b'registry_lifecycle_deleted_bytes_total{reason="retention"}' in cleaner.metrics.render()
    assert b"deleted_bytes_total{" not in metrics_before
    for blob in gone.blobs:
        assert await storage.get_released(Digest.parse(blob)) is None
    assert await dangling(storage) == []


async def test_a_dry_run_reports_what_would_go_and_deletes_nothing(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    await image(storage, "keep", blob_bytes("k", 2000))
    gone = await image(storage, "drop", blob_bytes("d", 2000))
    before = {info.key async for info in storage.objects.scan("")}
    report = await lifecycle(storage, tmp_path, rules=['image.tag == "keep"']).prune(dry_run=True)
    assert {info.key async for info in storage.objects.scan("")} == before
    assert report.tags == 1 and report.blobs == len(gone.blobs)
    assert report.freed_bytes == gone.bytes
    assert any(line.startswith(f"{NAME}:drop (retention") for line in report.lines)


async def test_a_manifest_cached_after_the_inventory_keeps_the_blobs_it_references(
    storage: RegistryStorage,
) -> None:
    shared = blob_bytes("shared", 3000)
    dropped = await image(storage, "drop", shared)
    await storage.delete_tag(NAME, "drop")
    await storage.delete_revision(NAME, Digest.parse(dropped.digest))
    inventory = await take_inventory(storage.objects)
    collection = Collection()
    collection.add_blobs(inventory, dict.fromkeys(dropped.blobs, "gc"))  # nothing holds them
    # Meanwhile a cacher stores another image with the same layer.
    late = await seed_manifest(storage, "hub/other", [shared, b"its own"], tag="late")
    outcome = await execute(storage, inventory, collection, ReferenceReader(storage))
    assert outcome.spared == [str(Digest.of_bytes(shared))]
    assert set(late.blobs) <= await stored(storage)
    assert await storage.has_layer_link("hub/other", Digest.of_bytes(shared))
    assert await dangling(storage) == []


# -- scrub ----------------------------------------------------------------------------------


async def test_scrub_removes_unreferenced_blobs_orphaned_records_and_old_leftovers_only(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    kept = await image(storage, "kept", blob_bytes("kept", 1000))
    orphan = Digest.of_bytes(blob_bytes("orphan", 500))
    await storage.put_blob_bytes(orphan, blob_bytes("orphan", 500))
    await storage.put_layer_link(NAME, orphan, 500)
    missing = Digest.of_bytes(b"never stored")
    await storage.put_layer_link(NAME, missing, 12)  # a link to nothing
    await storage.put_pull_time(NAME, Tag("gone"), 1.0)  # a pull time of no tag
    await storage.objects.put("_staging/sha256-" + "a" * 64 + "." + "b" * 32, b"left")
    report = await lifecycle(storage, tmp_path).scrub()
    assert await stored(storage) == set(kept.blobs)
    assert not await storage.has_layer_link(NAME, orphan)
    assert not await storage.has_layer_link(NAME, missing)
    assert await storage.get_pull_time(NAME, Tag("gone")) is None
    assert report.evicted == {"gc": 500}
    # A staged spool is a leftover only after max(grace, 15 min): this one stays.
    assert [key async for key in storage.objects.list("_staging/")] != []
    assert await dangling(storage) == []


async def test_scrub_keeps_unreferenced_blobs_younger_than_the_grace_period(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    orphan = Digest.of_bytes(b"just committed, its manifest on the way")
    await storage.put_blob_bytes(orphan, b"just committed, its manifest on the way")
    report = await lifecycle(storage, tmp_path, blob_grace_secs=600).scrub()
    assert str(orphan) in await stored(storage)
    assert report.blobs == 0


async def test_scrub_verify_removes_a_corrupt_blob_with_its_links_and_the_records_naming_it(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    layer = blob_bytes("layer", 4000)
    good = await image(storage, "good", layer)
    bad_manifest = await image(storage, "bad", blob_bytes("other", 1000))
    digest = Digest.of_bytes(layer)
    await corrupt(storage, digest, b"not the layer at all")
    await corrupt(storage, Digest.parse(bad_manifest.digest), b"{}")
    report = await lifecycle(storage, tmp_path).scrub(verify=True)
    remaining = await stored(storage)
    assert str(digest) not in remaining
    assert bad_manifest.digest not in remaining
    assert not await storage.has_layer_link(NAME, digest)
    assert await storage.list_tags(NAME) == ["good"]  # the corrupt manifest's tag went
    assert await storage.get_revision(NAME, Digest.parse(bad_manifest.digest)) is None
    assert report.evicted["corrupt"] == len(b"not the layer at all") + 2
    # The good manifest stays; its layer is fetched again on the next pull.
    assert await storage.get_revision(NAME, Digest.parse(good.digest)) is not None


async def corrupt(storage: RegistryStorage, digest: Digest, data: bytes) -> None:
    """Overwrite stored bytes behind the registry's back (a bad disk)."""
    store = storage.objects
    if isinstance(store, FsObjectStore):
        path = store.path(blob_key(digest))
        os.chmod(path, 0o644)
        path.write_bytes(data)
    else:
        await store.put(blob_key(digest), data)


# -- an index and DELETE --------------------------------------------------------------------


async def test_an_evicted_index_takes_its_children_and_a_kept_index_keeps_them(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    base = blob_bytes("base", 1000)
    amd = await seed_manifest(storage, NAME, [base, blob_bytes("amd", 800)])
    arm = await seed_manifest(storage, NAME, [base, blob_bytes("arm", 800)])
    multi = await seed_index(storage, NAME, [amd, arm], tag="multi", updated_at=time.time())
    other = await image(storage, "other", blob_bytes("o", 800))
    await lifecycle(storage, tmp_path, rules=['image.tag == "multi"']).prune()
    assert set(multi.blobs) <= await stored(storage)
    assert await storage.get_revision(NAME, Digest.parse(amd.digest)) is not None
    assert set(other.blobs).isdisjoint(await stored(storage))

    await lifecycle(storage, tmp_path, rules=['image.tag == "none"']).prune()
    assert await stored(storage) == set()
    assert await storage.list_tags(NAME) == []
    assert await dangling(storage) == []


async def test_delete_by_tag_removes_the_tag_and_by_digest_the_manifest_with_its_tags(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    first = await image(storage, "1.0", blob_bytes("x", 1000))
    await storage.put_tag(NAME, "stable", (await storage.get_tag(NAME, "1.0")))  # type: ignore[arg-type]
    route = Router(settings(tmp_path).repositories, None).route_for("hub", "library/app")
    deletes = DeleteService(storage)

    await deletes.delete(route, Tag("stable"))
    assert await storage.list_tags(NAME) == ["1.0"]
    assert await storage.get_revision(NAME, Digest.parse(first.digest)) is not None

    await deletes.delete(route, Digest.parse(first.digest))
    assert await storage.list_tags(NAME) == []
    assert await storage.get_revision(NAME, Digest.parse(first.digest)) is None
    for blob in first.blobs:  # released for GC, which deletes them (grace 0 here)
        mark = await storage.get_released(Digest.parse(blob))
        assert mark is not None and mark.reason == "delete"
    report = await lifecycle(storage, tmp_path).scrub()
    assert report.evicted == {"delete": first.bytes}
    assert await dangling(storage) == []

    from simple_registry.common.errors import ManifestUnknown

    with pytest.raises(ManifestUnknown):
        await deletes.delete(route, Tag("1.0"))


async def test_only_the_prune_command_removes_names_no_repository_covers(
    storage: RegistryStorage,
    tmp_path: Path,
) -> None:
    covered = await image(storage, "1.0", blob_bytes("covered", 500))
    orphan = await seed_manifest(storage, "gone/app", [blob_bytes("orphan", 500)], tag="1.0")
    await lifecycle(storage, tmp_path).prune()  # as a cacher's cycle runs it
    assert await storage.list_tags("gone/app") == ["1.0"]
    report = await lifecycle(storage, tmp_path).prune(orphans=True)  # as the command runs it
    assert await storage.list_tags("gone/app") == []
    assert any("no configured repository covers it" in line for line in report.lines)
    assert set(orphan.blobs).isdisjoint(await stored(storage))
    assert set(covered.blobs) <= await stored(storage)
