"""S3 object store: keys are object names under an optional `key_prefix` in one bucket.

Atomic publication is native to S3: PutObject and CompleteMultipartUpload make an object
visible in one step, and the parts of an unfinished multipart upload are never listed nor
readable. A writer streams with bounded memory: it buffers at most one part
(`multipart_part_size`) and uploads each full part before accepting more bytes; content no
larger than one part is sent with a single PutObject.

One aioboto3 client (and so one connection pool) serves the whole process; `open` enters
it and `close` leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import S3StorageSettings
from .objects import ObjectInfo, ObjectStat, ObjectStore, ObjectWriter, StorageUnavailable

log = logging.getLogger(__name__)

_READ_CHUNK = 256 * 1024
# Larger bodies go out as BytesIO, which aiohttp sends in 64 KiB slices; above this size it
# warns that a bytes body "might lock the event loop".
_BYTES_BODY_LIMIT = 1024 * 1024
# S3's limits on multipart uploads.
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * 1024 * 1024
# Connections shared by every concurrent stream of the process.
MAX_POOL_CONNECTIONS = 64
CONNECT_TIMEOUT_SECS = 10.0
READ_TIMEOUT_SECS = 60.0
MAX_ATTEMPTS = 3
# A readiness probe must answer even when the endpoint swallows packets.
PING_TIMEOUT_SECS = 10.0

# Error codes that mean "the key is not there" (HEAD answers carry only the status).
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


# S3's CopyObject copies at most 5 GB in one request.
MAX_SINGLE_COPY_BYTES = 5 * 1000**3
# S3's DeleteObjects takes at most 1000 keys.
MAX_DELETE_BATCH = 1000


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _error_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is_not_found(error: ClientError) -> bool:
    return _error_code(error) in _NOT_FOUND or _error_status(error) == 404


@contextlib.contextmanager
def _unavailable_on_failure(operation: str, key: str) -> Iterator[None]:
    """Turn transport failures, 5xx answers and any other unexpected S3 error into
    StorageUnavailable; callers catch the expected ones (404) before this runs."""
    try:
        yield
    except ClientError as error:
        code, status = _error_code(error), _error_status(error)
        raise StorageUnavailable(f"S3 {operation} {key!r} failed: {status} {code}") from error
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as error:
        raise StorageUnavailable(f"S3 {operation} {key!r} failed: {error!r}") from error


class S3ObjectWriter(ObjectWriter):
    """A streaming upload of one key. Bytes are held in one buffer of at most `part_size`;
    the multipart upload is created only when more than one part of content arrives."""

    def __init__(self, store: S3ObjectStore, key: str, part_size: int):
        self._store = store
        self._key = key
        self._part_size = part_size
        self._part = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._finished = False
        self.size = 0

    @property
    def upload_id(self) -> str | None:
        """The multipart upload in progress, None while everything fits in one part."""
        return self._upload_id

    async def write(self, chunk: bytes) -> None:
        if self._finished:
            raise RuntimeError(f"write to a finished writer of {self._key!r}")
        view = memoryview(chunk)
        while view:
            # A full buffer is uploaded only once more bytes arrive, so content of exactly
            # one part still goes out as a single PutObject.
            buffered = self._part.tell()
            if buffered >= self._part_size:
                await self._upload_part()
                buffered = 0
            room = self._part_size - buffered
            self._part.write(view[:room])
            view = view[room:]
        self.size += len(chunk)

    def _take_part(self) -> io.BytesIO:
        """The buffered bytes as a request body, rewound; the writer starts a new buffer.

        The BytesIO itself is the body: aiohttp sends it in 64 KiB slices, so a part costs
        about its own size while in flight (a bytearray body would be copied, twice, into
        the socket transport's buffer on Python 3.11)."""
        part, self._part = self._part, io.BytesIO()
        part.seek(0)
        return part

    async def _upload_part(self) -> None:
        if len(self._parts) >= MAX_PARTS:
            raise ValueError(
                f"object larger than {MAX_PARTS} parts of {self._part_size} bytes: "
                "raise multipart_part_size"
            )
        client = self._store.client
        bucket = self._store.bucket
        if self._upload_id is None:
            with _unavailable_on_failure("CreateMultipartUpload", self._key):
                created = await client.create_multipart_upload(Bucket=bucket, Key=self._key)
            self._upload_id = str(created["UploadId"])
        number = len(self._parts) + 1
        with _unavailable_on_failure("UploadPart", self._key):
            answer = await client.upload_part(
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=self._take_part(),
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def commit(self) -> None:
        if self._finished:
            raise RuntimeError(f"commit of a finished writer of {self._key!r}")
        client = self._store.client
        bucket = self._store.bucket
        if self._upload_id is None:
            with _unavailable_on_failure("PutObject", self._key):
                await client.put_object(Bucket=bucket, Key=self._key, Body=self._take_part())
        else:
            if self._part.tell() > 0:
                await self._upload_part()
            with _unavailable_on_failure("CompleteMultipartUpload", self._key):
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        self._finished = True

    async def abort(self) -> None:
        self._part = io.BytesIO()
        if self._finished:
            return
        self._finished = True
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            await self._store.client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._key, UploadId=upload_id
            )
        except Exception as error:
            # A lifecycle rule (AbortIncompleteMultipartUpload) reclaims what is left.
            log.warning("abort of multipart upload failed key=%s error=%s", self._key, error)


class S3ObjectStore(ObjectStore):
    shared = True
    list_page_size = 1000  # S3's maximum keys per ListObjectsV2 answer

    def __init__(self, settings: S3StorageSettings, redirect: bool = False):
        if settings.multipart_part_size < MIN_PART_SIZE:
            raise ValueError(f"multipart_part_size must be at least {MIN_PART_SIZE} bytes")
        self.settings = settings
        self.bucket = settings.bucket
        self.redirect = redirect
        self._prefix = settings.key_prefix.strip("/")
        self._session = aioboto3.Session(
            aws_access_key_id=settings.access_key_id or None,
            aws_secret_access_key=settings.secret_key or None,
            region_name=settings.region or None,
        )
        self._client_context: Any = None
        self._client: Any = None

    # -- lifecycle ----------------------------------------------------------------------------

    def _addressing_style(self) -> str:
        """Path-style for S3-compatible servers (MinIO, Ceph, moto: no wildcard DNS needed);
        AWS itself wants virtual-hosted style (new buckets refuse path-style)."""
        endpoint = self.settings.endpoint
        if (
            endpoint is None
            or urlsplit(endpoint).hostname in (None, "")
            or str(urlsplit(endpoint).hostname).endswith(".amazonaws.com")
        ):
            return "virtual"
        return "path"

    def _config(self) -> Config:
        return Config(
            signature_version="s3v4",
            s3={"addressing_style": self._addressing_style()},
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT_SECS,
            read_timeout=READ_TIMEOUT_SECS,
            max_pool_connections=MAX_POOL_CONNECTIONS,
            # Recent botocore adds CRC checksums (and aws-chunked bodies) by default, which
            # several S3-compatible servers reject; send them only where S3 requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    async def open(self) -> None:
        if self._client is not None:
            return
        context = self._session.client(
            "s3", endpoint_url=self.settings.endpoint or None, config=self._config()
        )
        self._client = await context.__aenter__()
        self._client_context = context

    async def close(self) -> None:
        context, self._client_context, self._client = self._client_context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3ObjectStore used before open()")
        return self._client

    # -- keys ---------------------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        """The S3 object name of a store key."""
        return f"{self._prefix}/{key}" if self._prefix else key

    def _store_key(self, name: str) -> str:
        return name[len(self._prefix) + 1 :] if self._prefix else name

    # -- objects ------------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectStat | None:
        name = self.object_key(key)
        with _unavailable_on_failure("HeadObject", name):
            try:
                answer = await self.client.head_object(Bucket=self.bucket, Key=name)
            except ClientError as error:
                if _is_not_found(error):
                    return None
                raise
        return ObjectStat(size=int(answer["ContentLength"]))

    async def get(self, key: str) -> bytes | None:
        name = self.object_key(key)
        with _unavailable_on_failure("GetObject", name):
            try:
                answer = await self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as error:
                if _is_not_found(error):
                    return None
                raise
            body = answer["Body"]
            async with body:
                data: bytes = await body.read()
        return data

    async def put(self, key: str, data: bytes) -> None:
        name = self.object_key(key)
        with _unavailable_on_failure("PutObject", name):
            body = io.BytesIO(data) if len(data) > _BYTES_BODY_LIMIT else data
            await self.client.put_object(Bucket=self.bucket, Key=name, Body=body)

    async def writer(self, key: str) -> S3ObjectWriter:
        return S3ObjectWriter(self, self.object_key(key), self.settings.multipart_part_size)

    async def _listing(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """The ListObjectsV2 entries under `prefix`, page by page."""
        name = self.object_key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=name, PaginationConfig={"PageSize": self.list_page_size}
        )
        with _unavailable_on_failure("ListObjectsV2", name):
            async for page in pages:
                for item in page.get("Contents", ()):
                    yield item

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for item in self._listing(prefix):
            yield self._store_key(str(item["Key"]))

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for item in self._listing(prefix):
            yield ObjectInfo(
                self._store_key(str(item["Key"])),
                int(item["Size"]),
                item["LastModified"].timestamp(),
            )

    async def promote(self, source: str, destination: str) -> None:
        """A server-side copy (no bytes through this process), then the source removed."""
        stat = await self.stat(source)
        if stat is None:
            raise FileNotFoundError(source)
        if stat.size > MAX_SINGLE_COPY_BYTES:
            await super().promote(source, destination)  # CopyObject's limit; stream instead
            return
        name = self.object_key(destination)
        with _unavailable_on_failure("CopyObject", name):
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=name,
                CopySource={"Bucket": self.bucket, "Key": self.object_key(source)},
            )
        await self.delete(source)

    async def delete(self, key: str) -> None:
        name = self.object_key(key)
        with _unavailable_on_failure("DeleteObject", name):
            await self.client.delete_object(Bucket=self.bucket, Key=name)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, up to S3's 1000 keys per request."""
        names = [self.object_key(key) for key in keys]
        for start in range(0, len(names), MAX_DELETE_BATCH):
            batch = names[start : start + MAX_DELETE_BATCH]
            with _unavailable_on_failure("DeleteObjects", batch[0]):
                answer = await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
                )
            failed = answer.get("Errors", ())
            if failed:
                first = failed[0]
                raise StorageUnavailable(
                    f"S3 DeleteObjects failed for {len(failed)} keys, "
                    f"e.g. {first.get('Key')!r}: {first.get('Code')}"
                )

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        name = self.object_key(key)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if start > 0 or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with _unavailable_on_failure("GetObject", name):
            try:
                answer = await self.client.get_object(**request)
            except ClientError as error:
                if _is_not_found(error):
                    raise FileNotFoundError(f"no object {name!r}") from error
                if _error_code(error) == "InvalidRange":
                    return  # start at or past the end: nothing to read, as on a file
                raise
            body = answer["Body"]
            # Leaving the block early (the consumer stopped) closes the connection rather
            # than draining the rest of the object.
            async with body:
                async for chunk in body.iter_chunks(_READ_CHUNK):
                    yield chunk

    async def presigned_url(self, key: str, expires_secs: int = 900) -> str | None:
        if not self.redirect:
            return None
        name = self.object_key(key)
        with _unavailable_on_failure("presign", name):
            url: str = await self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=expires_secs,
            )
        return url

    async def ping(self) -> None:
        try:
            with _unavailable_on_failure("HeadBucket", self.bucket):
                async with asyncio.timeout(PING_TIMEOUT_SECS):
                    await self.client.head_bucket(Bucket=self.bucket)
        except StorageUnavailable:
            raise
        except Exception as error:
            raise StorageUnavailable(f"S3 HeadBucket {self.bucket!r} failed: {error}") from error
