"""Protocol fidelity: what real clients and the OCI conformance suite expect from a mirror,
checked against CNCF Distribution's own answers, cold and warm."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.distribution import Distribution
from tests.fixtures.engines import ContainerdEngine, EngineError, require_root
from tests.fixtures.images import PushedImage
from tests.fixtures.mirror import Mirror, MirrorFactory, upstream_entry
from tests.fixtures.oci import Blob, canonical_json, sha256_digest
from tests.fixtures.plugin import PushedImageCache, pusher_for
from tests.fixtures.skopeo import SKOPEO

REPO = "docker-io"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def hub(mirror_factory: MirrorFactory, upstream: Distribution, **repository: Any) -> Mirror:
    return mirror_factory({REPO: {"upstream": [upstream_entry(upstream)], **repository}})


def answer(response: requests.Response) -> tuple[int, str | None, str | None]:
    content_type = response.headers.get("Content-Type", "")
    media = content_type.split(";")[0] if response.status_code == 200 else None
    return response.status_code, response.headers.get("Docker-Content-Digest"), media


# (image kind, flavor, the client's Accept): combinations whose answer is not a schema 1
# conversion (Distribution signs those anew, so their bytes are not comparable).
NEGOTIATIONS = [
    ("index", None, OCI_MANIFEST),
    ("index", None, f"{DOCKER_MANIFEST}, {DOCKER_LIST}"),
    ("index", None, f"{OCI_MANIFEST}, {OCI_INDEX}"),
    ("docker_list", None, DOCKER_MANIFEST),
    ("docker_list", None, f"{DOCKER_MANIFEST}, {DOCKER_LIST}"),
    ("small", "oci", DOCKER_MANIFEST),
    ("small", "oci", OCI_MANIFEST),
    ("small", "docker", DOCKER_MANIFEST),
]


@pytest.mark.parametrize(("kind", "flavor", "accept"), NEGOTIATIONS)
def test_a_narrow_accept_is_answered_as_the_upstream_answers_it_cold_and_warm(
    mirror_factory: MirrorFactory,
    upstream: Distribution,
    pushed_images: PushedImageCache,
    unique_repo: str,
    kind: Any,
    flavor: str | None,
    accept: str,
) -> None:
    options = {"flavor": flavor} if flavor else {}
    image = pushed_images.get(upstream, kind, name=unique_repo, tag="1.0", **options)
    mirror = hub(mirror_factory, upstream, immutable_tags=True)
    headers = {"Accept": accept}
    direct = f"{upstream.url}/v2/{unique_repo}/manifests/1.0"
    through = f"{mirror.url}/v2/{REPO}/{unique_repo}/manifests/1.0"
    for method in ("HEAD", "GET"):
        expected = answer(requests.request(method, direct, headers=headers, timeout=30))
        assert answer(requests.request(method, through, headers=headers, timeout=30)) == expected
    # The canonical manifest was cached; now warm, with no upstream request at all.
    mirror.wait_for_tag(f"{REPO}/{unique_repo}", "1.0")
    mark = upstream.mark()
    for _ in range(10):
        for method in ("HEAD", "GET"):
            expected = answer(requests.request(method, direct, headers=headers, timeout=30))
            warm = answer(requests.request(method, through, headers=headers, timeout=30))
            assert warm == expected
    ours = [e for e in upstream.settled_requests_since(mark) if "simple-registry" in e.user_agent]
    assert ours == [], "a narrow Accept on a cached immutable tag asks the upstream nothing"
    del image


# -- referrers -------------------------------------------------------------------------------

SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def push_referrer(
    dist: Distribution, name: str, subject: PushedImage, artifact_type: str
) -> dict[str, Any]:
    """An artifact manifest whose subject is `subject`, pushed the OCI 1.1 fallback way: the
    manifest by digest, then the `sha256-<hex>` tag index listing every referrer."""
    pusher = pusher_for(dist)
    try:
        config = Blob.of(b"{}", EMPTY)
        layer = Blob.of(f"{artifact_type} of {subject.digest}".encode(), "application/octet-stream")
        for blob in (config, layer):
            pusher.push_blob(name, blob)
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {"mediaType": EMPTY, "digest": config.digest, "size": config.size},
                "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
                "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                            "size": len(subject.manifest_bytes)},
            }
        )  # fmt: skip
        digest = pusher.push_manifest(name, sha256_digest(manifest), manifest, OCI_MANIFEST)
        descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                      "artifactType": artifact_type}  # fmt: skip
        tag = subject.digest.replace(":", "-")
        try:
            raw, _, _ = pusher.get_manifest(name, tag)
            listed = json.loads(raw)["manifests"]
        except Exception:
            listed = []
        index = canonical_json(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*listed, descriptor]}
        )
        pusher.push_manifest(name, tag, index, OCI_INDEX)
        return descriptor
    finally:
        pusher.client.close()


def test_referrers_come_from_the_upstreams_fallback_tag_filtered_and_cached_for_an_outage(
    mirror_factory: MirrorFactory,
    distribution_factory: Any,
    pushed_images: PushedImageCache,
) -> None:
    private = distribution_factory()
    subject = pushed_images.get(private, "small", name="app/signed", tag="1.0")
    sbom = push_referrer(private, "app/signed", subject, SBOM)
    signature = push_referrer(private, "app/signed", subject, SIGNATURE)
    mirror = hub(mirror_factory, private)
    url = f"{mirror.url}/v2/{REPO}/app/signed/referrers/{subject.digest}"

    listed = requests.get(url, timeout=30)
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == OCI_INDEX  # exactly: no charset
    assert [m["digest"] for m in listed.json()["manifests"]] == [
        sbom["digest"],
        signature["digest"],
    ]
    assert "OCI-Filters-Applied" not in listed.headers

    only_sboms = requests.get(url, params={"artifactType": SBOM}, timeout=30)
    assert only_sboms.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in only_sboms.json()["manifests"]] == [sbom["digest"]]

    nothing = requests.get(
        f"{mirror.url}/v2/{REPO}/app/signed/referrers/{sbom['digest']}", timeout=30
    )
    assert nothing.status_code == 200 and nothing.json()["manifests"] == []

    mirror.wait_for_tag(f"{REPO}/app/signed", subject.digest.replace(":", "-"))
    private.stop()
    stale = requests.get(url, timeout=30)
    assert stale.status_code == 200 and "Warning" in stale.headers
    assert [m["digest"] for m in stale.json()["manifests"]] == [sbom["digest"], signature["digest"]]
    unknown = requests.get(
        f"{mirror.url}/v2/{REPO}/app/signed/referrers/sha256:{'0' * 64}", timeout=30
    )
    assert unknown.status_code == 503


# -- namespaces, references, conditional requests ------------------------------------------------------


def test_an_unconfigured_ns_is_unknown_and_never_docker_hubs_content(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror = mirror_factory(
        {REPO: {"namespace": "docker.io", "upstream": [upstream_entry(upstream)]}},
        global_={"default_repository": REPO},
    )
    path = f"/v2/{small_image.name}/manifests/{small_image.tag}"
    assert mirror.get(path).status_code == 200  # Docker's registry-mirrors: no ns
    assert mirror.get(path, params={"ns": "docker.io"}).status_code == 200
    quay = mirror.get(path, params={"ns": "quay.io"})
    assert quay.status_code == 404 and quay.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_a_reference_that_is_no_tag_is_an_unknown_manifest_not_a_bad_request(
    mirror_factory: MirrorFactory, upstream: Distribution
) -> None:
    mirror = hub(mirror_factory, upstream)
    for method in ("GET", "HEAD"):
        answer = requests.request(
            method, f"{mirror.url}/v2/{REPO}/x/y/manifests/.INVALID_MANIFEST_NAME", timeout=30
        )
        assert answer.status_code == 404
    assert (
        mirror.get(f"/v2/{REPO}/x/y/manifests/.INVALID_MANIFEST_NAME").json()["errors"][0]["code"]
        == "MANIFEST_UNKNOWN"
    )
    assert mirror.get(f"/v2/{REPO}/x/y/manifests/sha256:abc").status_code == 400  # a bad digest


def test_a_blob_not_modified_answer_names_its_digest(
    mirror_factory: MirrorFactory, upstream: Distribution, small_image: PushedImage
) -> None:
    mirror = hub(mirror_factory, upstream)
    blob = small_image.blobs[0]
    path = f"/v2/{REPO}/{small_image.name}/blobs/{blob.digest}"
    assert mirror.get(path).status_code == 200
    mirror.wait_for_blobs({blob.digest})
    again = mirror.get(path, headers={"If-None-Match": f'"{blob.digest}"'})
    assert again.status_code == 304
    assert again.headers["Docker-Content-Digest"] == blob.digest
    assert again.headers["ETag"] == f'"{blob.digest}"'


# -- tag lists ---------------------------------------------------------------------------------


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )


def test_five_parallel_inspects_of_a_cold_image_all_list_its_tag(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache,
    unique_repo: str,
) -> None:  # fmt: skip
    pushed_images.get(upstream, "small", name=unique_repo, tag="1.0")
    mirror = hub(mirror_factory, upstream)
    ref = f"docker://{mirror.host_port}/{REPO}/{unique_repo}:1.0"
    with ThreadPoolExecutor(5) as pool:
        results = list(
            pool.map(lambda _: skopeo("inspect", "--tls-verify=false", "--no-creds", ref), range(5))
        )
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert all(json.loads(r.stdout)["RepoTags"] == ["1.0"] for r in results)


def test_tag_lists_come_from_the_cache_by_default_and_from_the_upstream_when_asked(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache,
    unique_repo: str, tmp_path: Path,
) -> None:  # fmt: skip
    for tag in ("1.0", "2.0", "3.0"):
        pushed_images.get(upstream, "small", name=unique_repo, tag=tag, content=tag.encode())
    cache = hub(mirror_factory, upstream)
    forward = hub(mirror_factory, upstream, tag_list="upstream")
    path = f"/v2/{REPO}/{unique_repo}/tags/list"
    assert cache.get(path).status_code == 404  # nothing cached yet
    assert cache.get(f"/v2/{REPO}/{unique_repo}/manifests/2.0").status_code == 200
    assert cache.get(path).json()["tags"] == ["2.0"]  # at once, before its cache job lands

    listed = skopeo(
        "list-tags",
        "--tls-verify=false",
        "--no-creds",
        f"docker://{forward.host_port}/{REPO}/{unique_repo}",
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(listed.stdout)["Tags"]) == ["1.0", "2.0", "3.0"]
    # Distribution 2.8 ignores `n` and `last`: the registry pages its list itself.
    first = forward.get(path, params={"n": 2})
    assert first.json() == {"name": f"{REPO}/{unique_repo}", "tags": ["1.0", "2.0"]}
    link = first.headers["Link"]
    assert link == f'</v2/{REPO}/{unique_repo}/tags/list?n=2&last=2.0>; rel="next"'
    second = forward.get(link.split(";")[0].strip("<>"))
    assert second.json()["tags"] == ["3.0"] and "Link" not in second.headers

    synced = skopeo("sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", "--src-no-creds",
                    f"{forward.host_port}/{REPO}/{unique_repo}", str(tmp_path / "sync"))  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    copied = sorted(p.name.split(":")[-1] for p in (tmp_path / "sync").rglob("*:*") if p.is_dir())
    assert copied == ["1.0", "2.0", "3.0"]


def test_an_upstream_tag_list_falls_back_to_the_cached_tags_when_the_upstream_is_down(
    mirror_factory: MirrorFactory, distribution_factory: Any, pushed_images: PushedImageCache,
) -> None:  # fmt: skip
    private = distribution_factory()
    pushed_images.get(private, "small", name="app/x", tag="1.0")
    pushed_images.get(private, "small", name="app/x", tag="2.0", content=b"two")
    mirror = hub(mirror_factory, private, tag_list="upstream")
    assert mirror.get(f"/v2/{REPO}/app/x/manifests/1.0").status_code == 200
    mirror.wait_for_tag(f"{REPO}/app/x", "1.0")
    assert sorted(mirror.get(f"/v2/{REPO}/app/x/tags/list").json()["tags"]) == ["1.0", "2.0"]
    private.stop()
    down = mirror.get(f"/v2/{REPO}/app/x/tags/list")
    assert down.status_code == 200 and down.json()["tags"] == ["1.0"]
    assert down.headers["Warning"].startswith("299")
    unknown = mirror.get(f"/v2/{REPO}/app/never/tags/list")
    assert unknown.status_code == 503


# -- ranges --------------------------------------------------------------------------------------


def test_ranges_on_a_cold_and_a_cached_blob_are_answered_as_the_spec_says(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache,
    unique_repo: str,
) -> None:  # fmt: skip
    image = pushed_images.get(upstream, "large", name=unique_repo, tag="1.0", size_mib=4)
    blob = image.largest_blob
    data = requests.get(f"{upstream.url}/v2/{unique_repo}/blobs/{blob.digest}", timeout=60).content
    mirror = hub(mirror_factory, upstream)
    path = f"/v2/{REPO}/{unique_repo}/blobs/{blob.digest}"

    cold = mirror.get(path, headers={"Range": "bytes=100-199"})
    assert cold.status_code == 206
    assert cold.headers["Content-Range"] == f"bytes 100-199/{blob.size}"
    assert cold.content == data[100:200]
    mirror.wait_for_blobs({blob.digest})

    def get(**headers: str) -> requests.Response:
        return mirror.get(path, headers=headers)

    tail = get(Range="bytes=-10")
    assert (tail.status_code, tail.content) == (206, data[-10:])
    several = get(Range="bytes=0-9,20-29")
    assert several.status_code == 200 and several.content == data
    nothing = get(Range="bytes=-0")
    assert nothing.status_code == 416
    assert nothing.headers["Content-Range"] == f"bytes */{blob.size}"
    assert nothing.json()["errors"][0]["code"] == "RANGE_INVALID"
    same = get(Range="bytes=0-9", **{"If-Range": f'"{blob.digest}"'})
    assert (same.status_code, same.content) == (206, data[:10])
    other = get(Range="bytes=0-9", **{"If-Range": '"sha256:somethingelse"'})
    assert other.status_code == 200 and other.content == data


def test_containerd_with_a_default_hosts_toml_gets_no_other_registrys_content(
    mirror_factory: MirrorFactory, upstream: Distribution, pushed_images: PushedImageCache,
) -> None:  # fmt: skip
    require_root()
    image = pushed_images.get(upstream, "small", name="library/default-ns", tag="1.0")
    mirror = mirror_factory(
        {REPO: {"namespace": "docker.io", "upstream": [upstream_entry(upstream)]}},
        global_={"default_repository": REPO},
    )
    root = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    engine = ContainerdEngine(root / "containerd")
    try:
        engine.start()
        hosts = root / "certs.d"
        (hosts / "_default").mkdir(parents=True)
        (hosts / "_default" / "hosts.toml").write_text(
            f'[host."{mirror.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        pulled = engine.pull("docker.io/library/default-ns:1.0", hosts, "ns-test")
        assert engine.images("ns-test")["docker.io/library/default-ns:1.0"] == image.digest, pulled
        with pytest.raises(EngineError):
            engine.pull("quay.io/library/default-ns:1.0", hosts, "ns-test")
        log = mirror.log()
        assert "ns=docker.io" in log and "ns=quay.io" in log
        quay_lines = [
            line for line in log.splitlines() if "ns=quay.io" in line and "access=" in line
        ]
        assert quay_lines and all('" 404 ' in line for line in quay_lines)
        engine.clear("ns-test")
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
