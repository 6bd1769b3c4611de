"""Object stores: one suite, run against the filesystem and against S3 (a real moto server).

Every shared case runs on both backends through the `objects` fixture; the S3-only cases
(presigned URLs, key prefix, ping, memory) come last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
import requests
from simple_registry.common.oci import Digest
from simple_registry.common.storage.fs import TEMP_MARKER, FsObjectStore
from simple_registry.common.storage.layout import ManifestRecord, RegistryStorage, blob_key
from simple_registry.common.storage.objects import DigestMismatch, ObjectStore, StorageUnavailable
from simple_registry.common.storage.s3 import S3ObjectStore, S3ObjectWriter

if TYPE_CHECKING:
    # Imported for types only: at run time the module is loaded as a pytest plugin (so
    # pytest can rewrite it), before this test module is collected.
    from tests.fixtures.s3_server import S3Server, S3SettingsFactory

pytest_plugins = ["tests.fixtures.s3_server"]

MiB = 1024 * 1024
PART = 5 * MiB  # the part size of the test settings (S3's minimum)
BIG_SIZE = 12 * MiB + 12_345  # three parts of 5 MiB: 5 + 5 + 2.01
# Deliberately uneven: a single byte, chunks straddling part boundaries, one larger than a part.
UNEVEN_CHUNKS = [1, 700_001, 3 * MiB + 7, 65_536, 6 * MiB + 3, 13, 999_999]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def uneven_chunks(data: bytes) -> list[bytes]:
    chunks: list[bytes] = []
    offset = 0
    index = 0
    while offset < len(data):
        size = UNEVEN_CHUNKS[index % len(UNEVEN_CHUNKS)]
        chunks.append(data[offset : offset + size])
        offset += size
        index += 1
    return chunks


async def write_streamed(objects: ObjectStore, key: str, data: bytes) -> None:
    writer = await objects.writer(key)
    try:
        for chunk in uneven_chunks(data):
            await writer.write(chunk)
        await writer.commit()
    except BaseException:
        await writer.abort()
        raise


async def read_all(objects: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in objects.read(key, start, end)])


async def keys(objects: ObjectStore, prefix: str) -> list[str]:
    return sorted([key async for key in objects.list(prefix)])


def leftovers(objects: ObjectStore, request: pytest.FixtureRequest) -> list[str]:
    """What a backend holds besides committed keys: fs temp files, S3 open uploads."""
    if isinstance(objects, FsObjectStore):
        return [
            str(Path(folder, name).relative_to(objects.root))
            for folder, _dirs, files in os.walk(objects.root)
            for name in files
            if TEMP_MARKER in name
        ]
    assert isinstance(objects, S3ObjectStore)
    server: S3Server = request.getfixturevalue("s3_server")
    return server.multipart_uploads(objects.bucket)


def all_files(objects: ObjectStore, request: pytest.FixtureRequest) -> list[str]:
    """Every stored thing, committed or not (fs files, S3 objects and open uploads); not
    the fs writers' owner locks, which say who writes, not what is stored."""
    if isinstance(objects, FsObjectStore):
        return [
            str(Path(folder, name).relative_to(objects.root))
            for folder, _dirs, files in os.walk(objects.root)
            for name in files
            if Path(folder) != objects.owners_folder
        ]
    assert isinstance(objects, S3ObjectStore)
    server: S3Server = request.getfixturevalue("s3_server")
    return server.object_names(objects.bucket) + server.multipart_uploads(objects.bucket)


Store = TypeVar("Store", bound=ObjectStore)


@contextlib.asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["fs", "s3"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store: ObjectStore
    if request.param == "fs":
        store = FsObjectStore(tmp_path / "store")
    else:
        make: S3SettingsFactory = request.getfixturevalue("s3_settings_factory")
        store = S3ObjectStore(make(), redirect=False)
        assert store.settings.multipart_part_size == PART
    async with opened(store):
        yield store


@pytest.fixture
async def fs_objects(tmp_path: Path) -> AsyncIterator[FsObjectStore]:
    """The filesystem store alone, for what only it has to get right."""
    async with opened(FsObjectStore(tmp_path / "store")) as store:
        yield store


@pytest.fixture
def storage(objects: ObjectStore) -> RegistryStorage:
    return RegistryStorage(objects)


# -- plain objects ----------------------------------------------------------------------------


async def test_a_put_object_reads_back_and_stats_its_size_until_deleted(
    objects: ObjectStore,
) -> None:
    await objects.put("a/b/c.json", b'{"hello": 1}')

    assert await objects.get("a/b/c.json") == b'{"hello": 1}'
    stat = await objects.stat("a/b/c.json")
    assert stat is not None and stat.size == 12
    assert await keys(objects, "a/") == ["a/b/c.json"]

    await objects.delete("a/b/c.json")
    assert await objects.stat("a/b/c.json") is None
    assert await objects.get("a/b/c.json") is None
    assert await keys(objects, "a/") == []


async def test_a_missing_key_has_no_stat_and_no_content(objects: ObjectStore) -> None:
    assert await objects.stat("nothing/here") is None
    assert await objects.get("nothing/here") is None


async def test_deleting_a_missing_key_is_not_an_error(objects: ObjectStore) -> None:
    await objects.delete("nothing/here")
    assert await objects.stat("nothing/here") is None


async def test_put_replaces_the_previous_content_of_a_key(fs_objects: FsObjectStore) -> None:
    # On S3 a PutObject replaces the object by definition: only the filesystem is ours.
    objects = fs_objects
    await objects.put("k/v", b"first version, longer")
    await objects.put("k/v", b"second")

    assert await objects.get("k/v") == b"second"
    stat = await objects.stat("k/v")
    assert stat is not None and stat.size == 6


async def test_an_empty_object_is_stored_and_reads_back_empty(objects: ObjectStore) -> None:
    await objects.put("empty/put", b"")
    writer = await objects.writer("empty/streamed")
    await writer.commit()

    for key in ("empty/put", "empty/streamed"):
        assert await objects.get(key) == b""
        stat = await objects.stat(key)
        assert stat is not None and stat.size == 0
        assert await read_all(objects, key) == b""


async def test_reading_a_missing_key_raises_file_not_found(objects: ObjectStore) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(objects, "nothing/here")


# -- streaming --------------------------------------------------------------------------------


async def test_a_streamed_write_in_uneven_chunks_reads_back_byte_identical(
    objects: ObjectStore, request: pytest.FixtureRequest
) -> None:
    data = payload(BIG_SIZE)
    writer = await objects.writer("blobs/big")
    for chunk in uneven_chunks(data):
        await writer.write(chunk)
    if isinstance(writer, S3ObjectWriter):
        # Two full parts went out while streaming; the rest waits for commit.
        assert writer.upload_id is not None
    await writer.commit()

    stat = await objects.stat("blobs/big")
    assert stat is not None and stat.size == BIG_SIZE
    assert await objects.get("blobs/big") == data
    assert await read_all(objects, "blobs/big") == data
    if isinstance(objects, S3ObjectStore):
        server: S3Server = request.getfixturevalue("s3_server")
        head = server.client().head_object(Bucket=objects.bucket, Key="blobs/big")
        assert head["ETag"].strip('"').endswith("-3"), "uploaded as three multipart parts"


async def test_ranged_reads_return_exact_slices(objects: ObjectStore) -> None:
    data = payload(BIG_SIZE, seed=11)
    await write_streamed(objects, "blobs/ranged", data)

    windows = [
        (0, 1),  # the first byte
        (BIG_SIZE - 1, BIG_SIZE),  # the last byte
        (PART - 10, PART + 10),  # across the first part boundary
        (2 * PART - 1, 2 * PART + 1),  # across the second
        (123, 456_789),
        (0, BIG_SIZE),
    ]
    for start, end in windows:
        assert await read_all(objects, "blobs/ranged", start, end) == data[start:end], (start, end)
    assert await read_all(objects, "blobs/ranged", BIG_SIZE - 100) == data[-100:]
    assert await read_all(objects, "blobs/ranged", 5, 5) == b""


async def test_reading_from_the_end_of_an_object_yields_nothing(objects: ObjectStore) -> None:
    await objects.put("k/short", b"0123456789")

    assert await read_all(objects, "k/short", 10) == b""
    assert await read_all(objects, "k/short", 7) == b"789"


async def test_reads_are_streamed_in_bounded_chunks(objects: ObjectStore) -> None:
    data = payload(3 * MiB, seed=3)
    await objects.put("blobs/chunked", data)

    sizes = [len(chunk) async for chunk in objects.read("blobs/chunked")]
    assert sum(sizes) == len(data)
    assert len(sizes) > 1 and max(sizes) <= MiB


async def test_a_consumer_may_stop_reading_early(objects: ObjectStore) -> None:
    data = payload(2 * MiB, seed=5)
    await objects.put("blobs/early", data)

    stream = objects.read("blobs/early")
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]

    assert data.startswith(first)
    assert await objects.get("blobs/early") == data  # the store still works


# -- atomic visibility ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, PART + 1000], ids=["small", "multipart"])
async def test_an_uncommitted_write_is_invisible_until_commit(
    objects: ObjectStore, size: int
) -> None:
    data = payload(size, seed=size)
    writer = await objects.writer("repo/pending")
    await writer.write(data[:-10])
    await writer.write(data[-10:])

    assert await objects.stat("repo/pending") is None
    assert await objects.get("repo/pending") is None
    assert await keys(objects, "repo/") == []

    await writer.commit()
    stat = await objects.stat("repo/pending")
    assert stat is not None and stat.size == size
    assert await objects.get("repo/pending") == data
    assert await keys(objects, "repo/") == ["repo/pending"]


@pytest.mark.parametrize("size", [1000, 2 * PART + 1000], ids=["small", "multipart"])
async def test_an_aborted_write_leaves_nothing_behind(
    objects: ObjectStore, request: pytest.FixtureRequest, size: int
) -> None:
    writer = await objects.writer("repo/aborted")
    for chunk in uneven_chunks(payload(size)):
        await writer.write(chunk)
    await writer.abort()
    await writer.abort()  # twice is harmless

    assert await objects.stat("repo/aborted") is None
    assert await objects.get("repo/aborted") is None
    assert await keys(objects, "repo/") == []
    assert all_files(objects, request) == []
    assert leftovers(objects, request) == []


async def test_an_aborted_write_keeps_the_previous_version_of_the_key(
    fs_objects: FsObjectStore,
) -> None:
    # On S3 an aborted upload never touches the key (S3 guarantees it; that nothing of it
    # is left is checked above): only the filesystem's temp-file-and-rename is ours.
    objects = fs_objects
    await objects.put("repo/kept", b"old")
    writer = await objects.writer("repo/kept")
    await writer.write(payload(PART + 1))
    await writer.abort()

    assert await objects.get("repo/kept") == b"old"


async def test_concurrent_writers_and_readers_do_not_mix_their_bytes(
    objects: ObjectStore,
) -> None:
    contents = {f"c/{index}": payload(100_000 + index, seed=index) for index in range(24)}

    await asyncio.gather(*(write_streamed(objects, key, data) for key, data in contents.items()))
    read_back = await asyncio.gather(*(read_all(objects, key) for key in contents))

    assert read_back == list(contents.values())
    assert await keys(objects, "c/") == sorted(contents)


# -- listing ----------------------------------------------------------------------------------


async def test_listing_a_prefix_with_nothing_under_it_yields_nothing(
    objects: ObjectStore,
) -> None:
    assert await keys(objects, "repositories/") == []
    await objects.put("repositories/abc/x", b"1")

    assert await keys(objects, "repositories/ab/") == []
    assert await keys(objects, "other/") == []
    assert await keys(objects, "repositories/") == ["repositories/abc/x"]


async def test_listing_returns_every_key_under_the_prefix_across_many_pages(
    objects: ObjectStore,
) -> None:
    if isinstance(objects, S3ObjectStore):
        objects.list_page_size = 50  # several ListObjectsV2 pages without 1000s of keys
    expected = sorted(f"many/{index:05d}" for index in range(230))
    semaphore = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with semaphore:
            await objects.put(key, b"x")

    await asyncio.gather(*(put(key) for key in expected))
    assert await keys(objects, "many/") == expected


# -- the registry layout on top ---------------------------------------------------------------


async def test_a_blob_that_does_not_match_its_digest_is_rejected_and_never_visible(
    storage: RegistryStorage, objects: ObjectStore, request: pytest.FixtureRequest
) -> None:
    data = payload(PART + 4321, seed=1)
    claimed = Digest.of_bytes(b"something else entirely")

    async with await storage.blob_writer(claimed) as writer:
        for chunk in uneven_chunks(data):
            await writer.write(chunk)
        with pytest.raises(DigestMismatch) as raised:
            await writer.commit()

    assert raised.value.size == len(data)
    assert raised.value.actual == str(Digest.of_bytes(data))
    assert await storage.blob_info(claimed) is None
    assert await storage.read_blob(claimed) is None
    assert await keys(objects, "blobs/") == []
    assert leftovers(objects, request) == []


async def test_a_blob_that_matches_its_digest_is_published(storage: RegistryStorage) -> None:
    data = payload(PART + 4321, seed=2)
    digest = Digest.of_bytes(data)

    async with await storage.blob_writer(digest) as writer:
        for chunk in uneven_chunks(data):
            await writer.write(chunk)
        await writer.commit()

    info = await storage.blob_info(digest)
    assert info is not None and info.size == len(data)
    assert await storage.read_blob(digest) == data
    window = b"".join([c async for c in storage.read_blob_range(digest, PART - 3, PART + 3)])
    assert window == data[PART - 3 : PART + 3]


async def test_a_blob_writer_left_without_commit_publishes_nothing(
    storage: RegistryStorage, objects: ObjectStore, request: pytest.FixtureRequest
) -> None:
    data = payload(PART + 10, seed=4)
    digest = Digest.of_bytes(data)

    with pytest.raises(RuntimeError, match="upstream went away"):
        async with await storage.blob_writer(digest) as writer:
            await writer.write(data)
            raise RuntimeError("upstream went away")

    assert await storage.blob_info(digest) is None
    assert leftovers(objects, request) == []


async def test_put_blob_bytes_round_trips_and_checks_the_digest(
    storage: RegistryStorage,
) -> None:
    manifest = b'{"schemaVersion":2,"layers":[]}'
    digest = Digest.of_bytes(manifest)

    await storage.put_blob_bytes(digest, manifest)
    assert await storage.read_blob(digest) == manifest
    info = await storage.blob_info(digest)
    assert info is not None and info.size == len(manifest)

    wrong = Digest.of_bytes(b"other")
    with pytest.raises(DigestMismatch):
        await storage.put_blob_bytes(wrong, manifest)
    assert await storage.blob_info(wrong) is None


async def test_tags_revisions_and_layer_links_round_trip(storage: RegistryStorage) -> None:
    manifest = Digest.of_bytes(b"manifest")
    layer = Digest.of_bytes(b"layer")
    record = ManifestRecord(str(manifest), OCI_MANIFEST, 8, updated_at=100.0)

    assert await storage.get_tag("lib/app", "v1") is None
    assert await storage.put_tag("lib/app", "v1", record)
    assert await storage.get_tag("lib/app", "v1") == record
    older = ManifestRecord(str(Digest.of_bytes(b"old")), OCI_MANIFEST, 3, updated_at=50.0)
    assert not await storage.put_tag("lib/app", "v1", older)
    assert await storage.get_tag("lib/app", "v1") == record

    assert await storage.get_revision("lib/app", manifest) is None
    await storage.put_revision("lib/app", record)
    assert await storage.get_revision("lib/app", manifest) == record

    assert not await storage.has_layer_link("lib/app", layer)
    await storage.put_layer_link("lib/app", layer, 5)
    assert await storage.has_layer_link("lib/app", layer)
    assert not await storage.has_layer_link("lib/other", layer)


async def test_tag_and_repository_listings_are_exact_sorted_and_ignore_blobs(
    storage: RegistryStorage,
) -> None:
    record = ManifestRecord(str(Digest.of_bytes(b"m")), OCI_MANIFEST, 1, updated_at=1.0)
    for name, tag in [("lib/zeta", "b"), ("lib/zeta", "a"), ("lib/alpha", "1.0"), ("x", "latest")]:
        await storage.put_tag(name, tag, record)
    await storage.put_blob_bytes(Digest.of_bytes(b"m"), b"m")
    # A repository with only a layer link has no manifests: not a listed repository.
    await storage.put_layer_link("only/layers", Digest.of_bytes(b"m"), 1)

    assert await storage.list_tags("lib/zeta") == ["a", "b"]
    assert await storage.list_tags("lib/alpha") == ["1.0"]
    assert await storage.list_tags("lib/missing") == []
    assert await storage.list_repositories() == ["lib/alpha", "lib/zeta", "x"]


# -- S3 only ----------------------------------------------------------------------------------


def opened_s3(
    make: S3SettingsFactory, redirect: bool = True, **options: str
) -> contextlib.AbstractAsyncContextManager[S3ObjectStore]:
    return opened(S3ObjectStore(make(**options), redirect=redirect))


@pytest.fixture
async def s3_objects(s3_settings_factory: S3SettingsFactory) -> AsyncIterator[S3ObjectStore]:
    async with opened_s3(s3_settings_factory) as store:
        yield store


async def test_a_presigned_url_serves_the_object_bytes(s3_objects: S3ObjectStore) -> None:
    data = payload(100_000, seed=9)
    await s3_objects.put("blobs/presigned", data)

    url = await s3_objects.presigned_url("blobs/presigned", expires_secs=60)
    assert url is not None and "X-Amz-Signature=" in url
    response = await asyncio.to_thread(requests.get, url, timeout=10)
    assert response.status_code == 200
    assert response.content == data


async def test_a_store_without_redirect_hands_out_no_urls(
    s3_settings_factory: S3SettingsFactory,
) -> None:
    async with opened_s3(s3_settings_factory, redirect=False) as store:
        await store.put("k", b"v")
        assert await store.presigned_url("k") is None


async def test_the_key_prefix_is_applied_in_the_bucket_and_stripped_in_listings(
    s3_settings_factory: S3SettingsFactory, s3_server: S3Server
) -> None:
    async with opened_s3(s3_settings_factory, key_prefix="/mirror/v1/") as store:
        await check_key_prefix(store, s3_server)


async def check_key_prefix(s3_objects: S3ObjectStore, s3_server: S3Server) -> None:
    digest = Digest.of_bytes(b"layer")
    storage = RegistryStorage(s3_objects)
    await storage.put_blob_bytes(digest, b"layer")
    await s3_objects.put("repositories/r/_manifests/tags/t", b"{}")
    await write_streamed(s3_objects, "blobs/big", payload(PART + 1))
    # Something outside the prefix must stay invisible to the store.
    s3_server.client().put_object(Bucket=s3_objects.bucket, Key="blobs/outside", Body=b"x")

    assert s3_server.object_names(s3_objects.bucket) == sorted(
        [
            f"mirror/v1/{blob_key(digest)}",
            "mirror/v1/blobs/big",
            "mirror/v1/repositories/r/_manifests/tags/t",
            "blobs/outside",
        ]
    )
    assert await keys(s3_objects, "blobs/") == sorted([blob_key(digest), "blobs/big"])
    assert await keys(s3_objects, "repositories/") == ["repositories/r/_manifests/tags/t"]
    assert await s3_objects.get("blobs/outside") is None
    url = await s3_objects.presigned_url(blob_key(digest))
    assert url is not None and "/mirror/v1/blobs/" in url


async def test_content_of_exactly_one_part_is_a_single_put(
    s3_objects: S3ObjectStore, s3_server: S3Server
) -> None:
    data = payload(PART, seed=8)
    writer = await s3_objects.writer("blobs/one-part")
    for chunk in uneven_chunks(data):
        await writer.write(chunk)
    assert isinstance(writer, S3ObjectWriter) and writer.upload_id is None
    await writer.commit()

    head = s3_server.client().head_object(Bucket=s3_objects.bucket, Key="blobs/one-part")
    assert "-" not in head["ETag"], "a plain PutObject, not a multipart upload"
    assert await s3_objects.get("blobs/one-part") == data


async def test_a_streamed_write_holds_about_one_part_in_memory(s3_objects: S3ObjectStore) -> None:
    block = payload(MiB, seed=12)
    total = 6 * PART  # 30 MiB through a 5 MiB part buffer
    writer = await s3_objects.writer("blobs/memory")

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range(total // MiB):
            await writer.write(block)
        await writer.commit()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    stat = await s3_objects.stat("blobs/memory")
    assert stat is not None and stat.size == total
    # One part buffered, plus the 1 MiB slices botocore reads to sign the payload and what
    # the socket transport holds while sending (measured: about 7 MiB with 5 MiB parts);
    # a writer that kept two parts, or the object, needs 10 MiB or 30 MiB.
    assert peak < 2 * PART, f"peak {peak / MiB:.1f} MiB for {total / MiB:.0f} MiB written"


async def test_a_read_streams_without_holding_the_object(s3_objects: S3ObjectStore) -> None:
    await write_streamed(s3_objects, "blobs/streamed", payload(4 * PART, seed=13))

    read = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        async for chunk in s3_objects.read("blobs/streamed", 1, 4 * PART):
            read += len(chunk)
            del chunk
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert read == 4 * PART - 1
    assert peak < 2 * MiB, f"peak {peak / MiB:.1f} MiB reading {read / MiB:.0f} MiB"


async def test_ping_fails_for_a_missing_bucket(s3_server: S3Server) -> None:
    store = S3ObjectStore(s3_server.settings(s3_server.unique_bucket_name("never-created")))
    await store.open()
    try:
        with pytest.raises(StorageUnavailable):
            await store.ping()
    finally:
        await store.close()


async def test_ping_raises_storage_unavailable_once_the_server_is_stopped(
    s3_server_factory: Callable[[], S3Server],
) -> None:
    server = s3_server_factory()
    bucket = server.create_bucket(server.unique_bucket_name("ping"))
    store = S3ObjectStore(server.settings(bucket))
    await store.open()
    try:
        await store.ping()
        await store.put("k", b"v")
        server.stop()

        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await store.ping()
        with pytest.raises(StorageUnavailable):
            await store.stat("k")
        # Each call retries (3 attempts, with backoff) before giving up.
        assert time.monotonic() - started < 20
    finally:
        await store.close()
