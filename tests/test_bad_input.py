"""Wrong requests get the OCI error body and the right status, never a 500."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from simple_registry.common.config import parse_settings
from simple_registry.frontend.app import create_app

DIGEST = "sha256:" + "a" * 64


def settings_for(root: Path, upstream: str, default_allow: bool = True) -> Any:
    return parse_settings(
        {
            "blob_store": {"fs": {"root_dir": str(root)}},
            "global": {"access_policy": {"default_allow": default_allow}},
            # An upstream that refuses connections: no test here may reach one.
            "repository": {"docker-io": {"upstream": [{"url": upstream}]}},
        }
    )


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, refused_url: str) -> TestClient:
    return await aiohttp_client(create_app(settings_for(tmp_path / "storage", refused_url)))


async def oci_error(response: Any) -> str:
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    errors = body["errors"]
    assert isinstance(errors, list) and errors
    assert {"code", "message"} <= set(errors[0])
    return errors[0]["code"]


async def test_the_api_base_answers_with_the_distribution_version_header(
    client: TestClient,
) -> None:
    response = await client.get("/v2/")
    assert response.status == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/docker-io/x%2F..%2F..%2Fetc/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/docker-io/..x/blobs/" + DIGEST, 400, "NAME_INVALID"),
        ("GET", "/v2/docker-io/Upper/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/docker-io//x/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/docker-io/x./manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/docker-io/-x/manifests/latest", 400, "NAME_INVALID"),
        ("GET", "/v2/docker-io/x/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/docker-io/x/manifests/" + "t" * 129, 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/docker-io/x/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("GET", "/v2/docker-io/x/manifests/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("GET", "/v2/docker-io/x/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("GET", "/v2/docker-io/x/blobs/notadigest", 400, "DIGEST_INVALID"),
        ("HEAD", "/v2/docker-io/x/blobs/sha256:zz", 400, None),
        ("GET", "/v2/nowhere/x/manifests/latest", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/nowhere/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/docker-io/x/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/docker-io/x/unknown/route", 404, "NOT_FOUND"),
        ("GET", "/v3/", 404, "NOT_FOUND"),
        ("GET", "/", 404, "NOT_FOUND"),
        ("PUT", "/v2/docker-io/x/manifests/latest", 405, "UNSUPPORTED"),
        # A mirror deletes cached manifests, but `default_allow` never grants that.
        ("DELETE", "/v2/docker-io/x/manifests/" + DIGEST, 403, "DENIED"),
        ("DELETE", "/v2/docker-io/x/blobs/" + DIGEST, 405, "UNSUPPORTED"),
        ("POST", "/v2/docker-io/x/blobs/uploads/", 405, "UNSUPPORTED"),
        ("PATCH", "/v2/docker-io/x/blobs/uploads/some-session", 405, "UNSUPPORTED"),
        ("OPTIONS", "/v2/docker-io/x/manifests/latest", 405, "UNSUPPORTED"),
        ("GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/v2/_catalog?n=abc", 400, "PAGINATION_NUMBER_INVALID"),
    ],
)
async def test_a_wrong_request_gets_the_oci_error_and_status(
    client: TestClient, method: str, path: str, status: int, code: str | None
) -> None:
    response = await client.request(method, path)
    assert response.status == status
    if method != "HEAD":
        assert await oci_error(response) == code


async def test_an_unreachable_upstream_with_nothing_cached_is_a_503_not_a_404(
    client: TestClient,
) -> None:
    response = await client.get("/v2/docker-io/library/x/manifests/latest")
    assert response.status == 503
    assert await oci_error(response) == "UNAVAILABLE"


async def test_default_allow_false_with_no_rules_denies_every_repository(
    aiohttp_client: Any, tmp_path: Path, refused_url: str
) -> None:
    settings = settings_for(tmp_path / "storage", refused_url, default_allow=False)
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/v2/docker-io/library/x/manifests/latest")
    assert response.status == 403
    assert await oci_error(response) == "DENIED"
    response = await client.get("/v2/docker-io/library/x/blobs/" + DIGEST)
    assert response.status == 403


async def test_the_catalog_of_an_empty_mirror_is_an_empty_list(client: TestClient) -> None:
    response = await client.get("/v2/_catalog")
    assert response.status == 200
    assert await response.json() == {"repositories": []}


async def raw_answer(client: TestClient, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (HTTP client libraries normalise `..` away);
    the status and the body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def tree(folder: Path) -> list[str]:
    """Every file and folder below `folder` (what storage holds)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize(
    "target",
    [
        "/v2/docker-io/../../../etc/manifests/latest",
        "/v2/docker-io/%2E%2E/%2E%2E/etc/blobs/" + DIGEST,
        "/v2/docker-io/x/..%2F..%2F/tags/list",
    ],
)
async def test_a_path_with_dot_segments_never_reaches_storage(
    client: TestClient, tmp_path: Path, target: str
) -> None:
    before = tree(tmp_path)
    status, body = await raw_answer(client, target)
    assert status in (400, 404)
    assert json.loads(body)["errors"][0]["code"] in ("NAME_INVALID", "NOT_FOUND")
    # Nothing was written (or created on the way) anywhere, inside storage or beside it.
    assert tree(tmp_path) == before
    assert not [path for path in tree(tmp_path) if "etc" in path.split("/")]
