"""Shared pieces of the benchmark scripts (not a benchmark itself).

- `Bench`: a temp folder plus an ExitStack; every server a script starts is registered on
  it and stopped when the script ends, on success, on an exception, on Ctrl-C or SIGTERM.
- `Deployment` and `start_*`: the systems compared, each on free loopback ports: the
  upstream Distribution itself ("direct"), Distribution in proxy mode, this registry all
  in one process (`server`) and split (`frontend` + `cacher` + redis-server, one fs root).
- `write_layer`: a fast deterministic tar layer generator (one seeded 1 MiB block,
  rotated and numbered per MiB), written to disk once while hashing.
- `curl_parallel`: N concurrent `curl` processes, timed together; `pull_through` warms a
  registry with one image.
- `run_wrk`, `add_wrk_arguments`, `WrkOptions`: requests/s of `wrk` on one URL.
- small helpers: medians, tables, turns within a round, CPU seconds, versions of the tools.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.fixtures.distribution import AccessEntry, Distribution, ServedTls
from tests.fixtures.images import ImagePusher, PushedImage
from tests.fixtures.job_key import TEST_JOB_KEY
from tests.fixtures.mirror import Mirror, mirror_config, upstream_entry
from tests.fixtures.oci import (
    CHUNK,
    MANIFEST_ACCEPT,
    OCI_LAYER_TAR,
    Blob,
    Layer,
    build_manifest,
    tarinfo,
)
from tests.fixtures.plugin import pusher_for
from tests.fixtures.ports import free_port, poll_until
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.tls import TestPki

MiB = 1024 * 1024
REPO = "hub"  # the registry's repository key; clients ask for /v2/hub/<upstream name>/...
TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

#: Debian package of each external program the scripts run.
PACKAGES = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "redis-server": "redis-server",
    "curl": "curl",
    "nginx": "nginx",
    "wrk": "wrk",
}
SBIN = ("/usr/sbin", "/sbin")


def which(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    for folder in SBIN:
        candidate = Path(folder) / program
        if candidate.exists():
            return str(candidate)
    return None


def require(*programs: str) -> None:
    """Exit with the apt-get command to run when a program is missing."""
    missing = [p for p in programs if which(p) is None]
    if missing:
        packages = " ".join(sorted({PACKAGES.get(p, p) for p in missing}))
        print(f"missing: {', '.join(missing)}; install with: apt-get install -y {packages}")
        sys.exit(2)


def _version(args: list[str]) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine_line(*programs: str) -> str:
    """One line: cores, Python, and the versions of the given programs, plus the date."""
    versions = {
        "docker-registry": ["docker-registry", "--version"],
        "nginx": [which("nginx") or "nginx", "-v"],
        "wrk": ["wrk", "-v"],
        "skopeo": ["skopeo", "--version"],
        "redis-server": ["redis-server", "--version"],
        "curl": ["curl", "--version"],
    }
    parts = [
        f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))})",
        f"Python {platform.python_version()}",
    ]
    for program in programs:
        text = _version(versions[program])
        if program == "docker-registry":
            text = "Distribution " + text.split()[-1]
        elif program == "wrk":
            text = "wrk " + text.split()[1] if len(text.split()) > 1 else text
        elif program == "redis-server":
            text = "redis " + text.split()[2].removeprefix("v=")
        elif program == "curl":
            text = " ".join(text.split()[:2])
        elif program == "nginx":
            text = text.split(":", 1)[-1].strip()
        parts.append(text)
    load = os.getloadavg()[0]
    parts.append(f"load {load:.1f}")
    parts.append(time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    return "machine: " + ", ".join(parts)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def in_turns(names: Sequence[T], round_: int) -> list[T]:
    """``names`` in this round's order: rotated one place a round, so none always goes first."""
    shift = round_ % len(names)
    return [*names[shift:], *names[:shift]]


def cpu_seconds_of(stat: Path) -> float:
    """User + system seconds in a /proc .../stat file (a process: all its threads)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system time of these processes, all their threads, so far."""
    return sum(cpu_seconds_of(Path(f"/proc/{pid}/stat")) for pid in pids)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A markdown table (pastes straight into RESULTS.md)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))


def _raise_system_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


class Bench:
    """``with Bench("name") as bench:`` -- a temp folder and cleanup of all it started."""

    def __init__(self, name: str):
        self.name = name
        self.stack = contextlib.ExitStack()
        self.work = Path(".")

    def __enter__(self) -> Bench:
        signal.signal(signal.SIGTERM, _raise_system_exit)
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.stack.callback(shutil.rmtree, self.work, ignore_errors=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def layers(self, prefix: str, sizes_mib: Sequence[int], seed: int) -> list[Layer]:
        """Layers of the given sizes, each of its own bytes (seeds `seed`, `seed + 1`, ...)."""
        return [
            write_layer(self.path("data", f"{prefix}{i}.tar"), size * MiB, seed=seed + i)
            for i, size in enumerate(sizes_mib)
        ]

    def on_exit(self, callback: Callable[..., Any], *args: Any) -> None:
        self.stack.callback(callback, *args)

    def upstream(self) -> Distribution:
        dist = Distribution(self.path("upstream"))
        self.stack.callback(dist.close)
        return dist.start()

    def redis(self) -> RedisServer:
        server = RedisServer(self.path("redis"))
        self.stack.callback(server.stop)
        return server.start()


# -- test data ------------------------------------------------------------------------------
def upstream_for(bench: Bench, tls: bool) -> tuple[Distribution, list[str]]:
    """The upstream Distribution, and curl's arguments for it. With `tls` it serves a test
    CA's certificate, which the registry and Distribution's proxy (Go) trust through
    SSL_CERT_FILE."""
    if not tls:
        return bench.upstream(), []
    pki = TestPki(bench.path("pki"))
    dist = Distribution(
        bench.path("upstream"), tls=ServedTls(server=pki.server("upstream"), ca=pki.ca_path)
    )
    bench.on_exit(dist.close)
    os.environ["SSL_CERT_FILE"] = str(pki.ca_path)
    return dist.start(), ["--cacert", str(pki.ca_path)]


def push_and_drop(upstream: Distribution, name: str, layers: Sequence[Layer]) -> PushedImage:
    """Push `layers` as one image; the upstream has its copy, so their files go (disk)."""
    image = push_image(upstream, name, "1.0", layers)
    for layer in layers:
        assert layer.blob.path is not None
        layer.blob.path.unlink()
    return image


def write_layer(path: Path, size: int, seed: int) -> Layer:
    """An uncompressed tar layer holding /data.bin of ``size`` deterministic bytes.

    Each MiB is one seeded random 1 MiB block rotated by a per-MiB offset and numbered in
    its first 8 bytes: no two MiB are alike, and it writes at memcpy + sha256 speed.
    """
    base = random.Random(seed).randbytes(CHUNK)
    hasher = hashlib.sha256()
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:

        def put(data: bytes) -> None:
            nonlocal written
            hasher.update(data)
            out.write(data)
            written += len(data)

        put(tarinfo("data.bin", size, tarfile.REGTYPE, 0o644).tobuf(tarfile.USTAR_FORMAT))
        remaining, index = size, 0
        while remaining > 0:
            shift = (index * 7919 + seed * 104729) % CHUNK
            block = index.to_bytes(8, "little") + (base[shift:] + base[:shift])[8:]
            block = block[:remaining]
            put(block)
            remaining -= len(block)
            index += 1
        put(b"\0" * ((-size) % 512) + b"\0" * 1024)
    digest = "sha256:" + hasher.hexdigest()
    return Layer(Blob(digest, written, OCI_LAYER_TAR, path=path), digest)


def push_image(upstream: Distribution, name: str, tag: str, layers: Sequence[Layer]) -> PushedImage:
    """Push config + layers (large ones in 8 MiB PATCH chunks) + manifest by tag."""
    pusher: ImagePusher = pusher_for(upstream)
    try:
        image = build_manifest(list(layers), cmd=("/bin/sh", "-c", "ls -l /data.bin"))
        return pusher.push(name, tag, image)
    finally:
        pusher.client.close()


def push_small_image(upstream: Distribution) -> PushedImage:
    """The small single-platform image "bench/small:1.0" (a config and one tiny layer)."""
    pusher: ImagePusher = pusher_for(upstream)
    try:
        return pusher.small_image("bench/small", "1.0")
    finally:
        pusher.client.close()


def image_size(image: PushedImage) -> int:
    """Bytes of a pull: the manifest plus every blob."""
    return len(image.manifest_bytes) + sum(blob.size for blob in image.blobs)


# -- the systems compared -------------------------------------------------------------------
@dataclass
class Deployment:
    """One system under test as a client sees it."""

    label: str
    host_port: str
    prefix: str  # prepended to the upstream's repository name
    pid: int | None  # the process that serves HTTP (for RSS)
    stop: Callable[[], object]  # any return value is ignored (Mirror.stop returns a code)
    cached: Callable[[PushedImage], bool] = field(default=lambda _image: True)
    stored: Callable[[Iterable[str]], bool] = field(default=lambda _digests: True)
    other_pids: dict[str, int] = field(default_factory=dict)  # e.g. the split cacher
    quiet_s: float = 0.3  # upstream log quiet time that means "settled" (cacher included)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_port}"

    def name(self, image: PushedImage) -> str:
        return f"{self.prefix}{image.name}"

    def ref(self, image: PushedImage) -> str:
        return f"{self.host_port}/{self.name(image)}:{image.tag}"

    def blob_url(self, image: PushedImage, digest: str) -> str:
        return f"{self.url}/v2/{self.name(image)}/blobs/{digest}"

    def manifest_url(self, image: PushedImage, reference: str) -> str:
        return f"{self.url}/v2/{self.name(image)}/manifests/{reference}"

    def settle(self, image: PushedImage, upstream: Distribution, deadline_s: float = 300) -> None:
        """Wait until the whole image is cached and the upstream log went quiet."""
        poll_until(lambda: self.cached(image), deadline_s, what=f"{self.label}: image cached")
        upstream.access.wait_quiet(quiet_s=self.quiet_s, deadline_s=deadline_s)

    def settle_blobs(
        self, digests: Iterable[str], upstream: Distribution, deadline_s: float = 300
    ) -> None:
        """Wait until these blobs are stored and the upstream log went quiet."""
        wanted = list(digests)
        poll_until(lambda: self.stored(wanted), deadline_s, what=f"{self.label}: blobs stored")
        upstream.access.wait_quiet(quiet_s=self.quiet_s, deadline_s=deadline_s)


def direct(upstream: Distribution) -> Deployment:
    scheme = "https" if upstream.tls else "http"
    return Deployment(
        "direct (upstream)", upstream.host_port, "", None, lambda: None, scheme=scheme
    )


def distribution_proxy(bench: Bench, upstream: Distribution, label: str) -> Deployment:
    """A fresh Distribution in proxy mode (pull-through cache) of ``upstream``."""
    dist = Distribution(bench.path(label), proxy_remote_url=upstream.url)
    bench.on_exit(dist.close)
    dist.start()
    blobs = dist.root_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"

    def stored(digests: Iterable[str]) -> bool:
        return all(
            (blobs / d.split(":")[1][:2] / d.split(":")[1] / "data").exists() for d in digests
        )

    def cached(image: PushedImage) -> bool:
        return stored([image.digest, *image.blob_digests])

    assert dist.process is not None
    return Deployment(
        "Distribution proxy",
        dist.host_port,
        "",
        dist.process.pid,
        dist.close,
        cached,
        stored,
        quiet_s=2.0,  # it may fetch in the background: two seconds of quiet in the log
    )


def _registry_stored(root: Path) -> Callable[[Iterable[str]], bool]:
    def stored(digests: Iterable[str]) -> bool:
        for digest in digests:
            hex_ = digest.split(":")[1]
            if not (root / "blobs" / "sha256" / hex_[:2] / hex_).exists():
                return False
        return True

    return stored


def _registry_cached(root: Path) -> Callable[[PushedImage], bool]:
    def cached(image: PushedImage) -> bool:
        repo = root / "repositories" / REPO / image.name
        if not _registry_stored(root)([image.digest, *image.blob_digests]):
            return False
        for digest in image.blob_digests:
            if not (repo / "_layers" / "sha256" / digest.split(":")[1]).exists():
                return False
        return (repo / "_manifests" / "tags" / image.tag).exists()

    return cached


def _repositories(upstream: Distribution) -> dict[str, Any]:
    return {REPO: {"immutable_tags": True, "upstream": [upstream_entry(upstream)]}}


def registry_server(
    bench: Bench,
    upstream: Distribution,
    label: str,
    global_: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Deployment:
    """This registry all in one process (`server`), fs storage, in-process queue; `extra`
    adds top-level tables (`server.tls`, `auth`, ...)."""
    root = bench.path(label)
    config = mirror_config(
        root, _repositories(upstream), port=free_port(), global_=global_, extra=extra
    )
    mirror = Mirror(root, config, "server")
    bench.on_exit(mirror.stop)
    mirror.start()
    assert mirror.process is not None
    return Deployment(
        "registry server",
        mirror.host_port,
        f"{REPO}/",
        mirror.process.pid,
        mirror.stop,
        _registry_cached(mirror.data_root),
        _registry_stored(mirror.data_root),
        scheme=mirror.scheme,
    )


def registry_split(
    bench: Bench,
    upstream: Distribution,
    redis: RedisServer,
    label: str,
    global_: dict[str, Any] | None = None,
) -> Deployment:
    """This registry split: one `frontend`, one `cacher`, redis-server; one fs root."""
    root = bench.path(label)
    processes = []
    for command in ("frontend", "cacher"):
        config = mirror_config(root, _repositories(upstream), port=free_port(), global_=global_)
        config["queue"] = {
            "redis": {
                "url": redis.url,
                "key_prefix": f"bench-{label}",
                "job_signing_key": TEST_JOB_KEY.decode(),  # shared by frontend and cacher
            }
        }
        config["cacher"] = {"metrics_port": free_port(), "metrics_bind_address": "127.0.0.1"}
        mirror = Mirror(root, config, command)
        bench.on_exit(mirror.stop)
        processes.append(mirror.start())
    frontend = processes[0]
    assert frontend.process is not None

    def stop() -> None:
        for process in processes:
            process.stop()

    return Deployment(
        "registry split",
        frontend.host_port,
        f"{REPO}/",
        frontend.process.pid,
        stop,
        _registry_cached(frontend.data_root),
        _registry_stored(frontend.data_root),
        {"cacher": processes[1].process.pid} if processes[1].process else {},
    )


def start_mode(
    mode: str,
    bench: Bench,
    upstream: Distribution,
    redis: RedisServer | None,
    label: str,
    global_: dict[str, Any] | None = None,
) -> Deployment:
    if mode == "direct":
        return direct(upstream)
    if mode == "proxy":
        return distribution_proxy(bench, upstream, label)
    if mode == "server":
        return registry_server(bench, upstream, label, global_)
    if mode == "split":
        assert redis is not None
        return registry_split(bench, upstream, redis, label, global_)
    raise ValueError(mode)


def cleanup(deployment: Deployment, bench: Bench, label: str) -> None:
    """Stop a deployment and delete its storage (keeps the disk small between rounds)."""
    deployment.stop()
    shutil.rmtree(bench.path(label), ignore_errors=True)


# -- clients --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurlResult:
    status: int
    size: int
    seconds: float
    speed: float  # bytes/s as curl reports it


def curl_parallel(
    urls: Sequence[str],
    *,
    expect_size: int | Sequence[int] | None = None,
    timeout_s: float = 300,
    extra_args: Sequence[str] = (),
) -> tuple[float, list[CurlResult]]:
    """GET every URL with its own curl process, all at once; (wall seconds, results).
    ``expect_size``: the body size of every URL, or one per URL. ``extra_args``: more curl
    options, e.g. ``--cacert CA -u USER:PASSWORD``."""
    args = [
        "curl",
        "-s",
        "--noproxy",
        "*",
        *extra_args,
        "-H",
        f"Accept: {MANIFEST_ACCEPT}",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{time_total} %{speed_download}",
    ]
    processes: list[subprocess.Popen[str]] = []
    try:
        started = time.perf_counter()
        for url in urls:
            processes.append(subprocess.Popen([*args, url], stdout=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=timeout_s)[0] for p in processes]
        wall = time.perf_counter() - started
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    sizes = [expect_size] * len(urls) if not isinstance(expect_size, Sequence) else expect_size
    results = []
    for url, out, want in zip(urls, outputs, sizes, strict=True):
        status, size, seconds, speed = out.split()
        result = CurlResult(int(status), int(size), float(seconds), float(speed))
        if result.status != 200 or (want is not None and result.size != want):
            raise RuntimeError(f"GET {url}: {out!r} (expected 200 and {want} bytes)")
        results.append(result)
    return wall, results


def pull_through(
    registry: Deployment,
    image: PushedImage,
    upstream: Distribution,
    *,
    by_digest: bool = True,
    extra_args: Sequence[str] = (),
) -> None:
    """Pull an image through once with curl (its manifest by tag, by digest too unless told
    not to, then every blob) and wait until the registry cached it; ``extra_args`` as for
    `curl_parallel`."""
    references = (image.tag, image.digest) if by_digest else (image.tag,)
    for reference in references:
        curl_parallel(
            [registry.manifest_url(image, reference)],
            expect_size=image.image.size,
            extra_args=extra_args,
        )
    for blob in image.blobs:
        curl_parallel(
            [registry.blob_url(image, blob.digest)], expect_size=blob.size, extra_args=extra_args
        )
    registry.settle(image, upstream)


def run_wrk(
    url: str,
    threads: int,
    connections: int,
    duration: int,
    headers: Sequence[str] = (),
    timeout_s: int = 2,
) -> float:
    """Requests/s; raises if any response was not 2xx/3xx or a socket failed (a response
    slower than ``timeout_s``, wrk's default 2, counts as a failed socket). ``headers``:
    more request headers ("Name: value"), e.g. an Authorization; https URLs are TLS (wrk
    does not verify the certificate; each connection does one handshake)."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s"]
    for header in (f"Accept: {MANIFEST_ACCEPT}", *headers):
        args += ["-H", header]
    args.append(url)
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or (errors and re.search(r"[1-9]", errors.group(1))):
        raise RuntimeError(f"wrk {url}: errors\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk {url}: no Requests/sec in\n{out}")
    return float(match.group(1))


def add_wrk_arguments(parser: argparse.ArgumentParser) -> None:
    """--repeat (rounds) and the options of every wrk run: --duration, --threads, --connections."""
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)


@dataclass(frozen=True)
class WrkOptions:
    """The wrk options `add_wrk_arguments` parsed (all but --repeat)."""

    threads: int
    connections: int
    duration: int  # seconds per run

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WrkOptions:
        return cls(threads=args.threads, connections=args.connections, duration=args.duration)

    @property
    def command(self) -> str:
        """``wrk -t2 -c32 -d10s``, for the line above a table."""
        return f"wrk -t{self.threads} -c{self.connections} -d{self.duration}s"

    def run(self, url: str, headers: Sequence[str] = (), timeout_s: int = 2) -> float:
        """Requests/s of one run on ``url`` (see `run_wrk`)."""
        return run_wrk(url, self.threads, self.connections, self.duration, headers, timeout_s)


def manifest_rates(
    systems: Mapping[str, Deployment],
    image: PushedImage,
    references: Mapping[str, str],
    wrk: WrkOptions,
    repeat: int,
) -> dict[tuple[str, str], list[float]]:
    """Requests/s of one wrk run per system and reference (label: tag or digest), every
    round, the systems in turns; keyed by (system, reference label)."""
    rates: dict[tuple[str, str], list[float]] = {(s, r): [] for s in systems for r in references}
    for round_ in range(repeat):
        for name in in_turns(list(systems), round_):
            for label, reference in references.items():
                rates[name, label].append(wrk.run(systems[name].manifest_url(image, reference)))
    return rates


def requests_by_registry(upstream: Distribution, mark: int) -> list[AccessEntry]:
    """The upstream's requests since ``mark`` that this registry sent (by its User-Agent)."""
    return [e for e in upstream.requests_since(mark) if e.user_agent.startswith("simple-registry")]


def clients_label(n: int) -> str:
    """A column heading: "1 client", "8 clients"."""
    return f"{n} client{'s' if n > 1 else ''}"


def upstream_cost(upstream: Distribution, mark: int) -> dict[str, int]:
    """Requests and body bytes the upstream served since ``mark`` (HEAD bodies are 0)."""
    entries = upstream.requests_since(mark)
    gets = [e for e in entries if e.method == "GET"]
    return {
        "requests": len(entries),
        "gets": len(gets),
        "heads": sum(1 for e in entries if e.method == "HEAD"),
        "blob_gets": sum(1 for e in gets if "/blobs/" in e.path),
        "bytes": sum(e.bytes for e in gets),
    }
