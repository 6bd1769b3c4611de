"""What access control costs, warm: manifests/s and blob MiB/s over TLS with Basic
identities and three rules, against the same registry without access control, CNCF
Distribution with htpasswd over TLS, and (blobs) nginx serving the same file over TLS.

    .venv/bin/python -m bench.access_control [--repeat 3] [--duration 10] [--size-mib 256]
        [--clients 1,8] [--connections 32] [--threads 2]

A small image and one --size-mib blob are pushed to an upstream Distribution. Three
registries (`server`, fs storage, `immutable_tags = true`) pull them once and are measured
after the cacher stored them:

- "HTTP, open": plain HTTP, `default = "allow"`, no identities (the reference for TLS's cost);
- "TLS, open": the same over TLS (`[server.tls]`, a test CA's ECDSA P-256 certificate);
- "TLS + Basic + 3 rules": the same over TLS, `default = "deny"`, three `[auth.identity]`
  users with Argon2 hashes at argon2-cffi's defaults (what `PasswordHasher().hash` makes and
  deploy/README.md tells operators to use), and three rules of which the client's request
  is allowed by the third (the first two are evaluated and false).

Distribution (hosted, TLS with the same certificate, `auth.htpasswd` with a bcrypt entry of
cost 5, `htpasswd -B`'s default) serves the same storage as the upstream. nginx (Debian,
`ssl_certificate`, one worker, `sendfile on`) serves a copy of the blob file over TLS.
Every client sends the same `Authorization: Basic` (ignored where nothing checks it).

Manifests: `wrk` with that header and an Accept of every manifest type, by tag and by
digest (keep-alive: one TLS handshake per connection, then requests). Blobs: N parallel
`curl --cacert CA -u USER:PASSWORD` processes. Systems take turns within each round (the
order rotates); medians over the rounds. The target: TLS + Basic + 3 rules >= 0.9x TLS, open.
"""

from __future__ import annotations

import argparse
import base64
import re
import socket
import ssl
from pathlib import Path
from typing import Any

import argon2
import bcrypt
import requests

from bench.harness import (
    Bench,
    Deployment,
    MiB,
    WrkOptions,
    add_wrk_arguments,
    clients_label,
    cpu_seconds,
    curl_parallel,
    in_turns,
    machine_line,
    median,
    print_table,
    pull_through,
    push_image,
    push_small_image,
    registry_server,
    requests_by_registry,
    require,
    write_layer,
)
from bench.warm_blob import Nginx
from tests.fixtures.distribution import Distribution, ServedTls
from tests.fixtures.images import PushedImage
from tests.fixtures.tls import TestPki

USERS = {"alice": "alice-bench-password", "bob": "bob-bench-password", "admin": "admin-pw"}
CLIENT = "alice"
RULES = [
    # Anonymous metrics: the script reads the Argon2 count between runs without a login.
    "request.action in ['healthz', 'readyz', 'metrics']",
    "identity.username == 'admin'",
    "identity.username != null && request.action in "
    "['get-api-version', 'get-manifest', 'get-blob', 'list-tags']",
]
OPEN = "registry TLS, open"
SECURE = "registry TLS + Basic + 3 rules"
PLAIN = "registry HTTP, open"
DISTRIBUTION = "Distribution TLS + htpasswd"
NGINX = "nginx TLS (static file)"
GiB = 1024 * MiB
BCRYPT_COST = 5  # `htpasswd -B`'s default
# A stall (Argon2 again when a remembered header expires, a busy machine) is counted in the
# requests/s instead of failing the run.
WRK_TIMEOUT_S = 10
VERIFICATIONS = "registry_password_verifications_total"


def distribution_tls(bench: Bench, upstream: Distribution, pki: TestPki, server: Any) -> Deployment:
    """Distribution serving the upstream's storage over TLS, htpasswd (bcrypt) for CLIENT."""
    folder = bench.path("distribution-tls")
    folder.mkdir(parents=True)
    htpasswd = folder / "htpasswd.bench"
    hashed = bcrypt.hashpw(USERS[CLIENT].encode(), bcrypt.gensalt(rounds=BCRYPT_COST))
    htpasswd.write_text(f"{CLIENT}:{hashed.decode()}\n")
    dist = Distribution(
        folder,
        tls=ServedTls(server=server, ca=pki.ca_path),
        extra_config={
            "storage": {"filesystem": {"rootdirectory": str(upstream.root_dir)}},
            "auth": {"htpasswd": {"realm": "bench", "path": str(htpasswd)}},
        },
    )
    bench.on_exit(dist.close)
    dist.start()
    assert dist.process is not None
    return Deployment(
        DISTRIBUTION, dist.host_port, "", dist.process.pid, dist.close, scheme="https"
    )


def nginx_worker(master: int) -> int:
    """The one worker process of an nginx master (the one that serves)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def negotiated(host_port: str, ca: Path) -> str:
    """The TLS version and cipher a default Python client gets from a server."""
    host, port = host_port.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cipher = tls.cipher()
    return f"{cipher[1]} {cipher[0]}" if cipher else "?"


def scrape(deployment: Deployment, ca: Path, name: str) -> float:
    """The sum of one counter of the secured registry's /metrics (anonymous, no Argon2)."""
    answer = requests.get(f"{deployment.url}/metrics", verify=str(ca), timeout=30)
    answer.raise_for_status()
    total = 0.0
    for line in answer.text.splitlines():
        match = re.match(rf"{name}(\{{[^}}]*\}})? ([\d.e+]+)$", line)
        if match:
            total += float(match.group(2))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_wrk_arguments(parser)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--clients", default="1,8", help="comma-separated parallel clients")
    args = parser.parse_args()
    wrk = WrkOptions.from_args(args)
    require("docker-registry", "curl", "wrk", "nginx")
    counts = [int(c) for c in args.clients.split(",")]
    with Bench("access-control") as bench:
        pki = TestPki(bench.path("pki"))
        server = pki.server("server")  # 127.0.0.1 and localhost
        ca = pki.ca_path
        upstream = bench.upstream()
        small = push_small_image(upstream)
        layer = write_layer(bench.path("data", "blob.tar"), args.size_mib * MiB, seed=1)
        blob_image = push_image(upstream, "bench/blob", "1", [layer])
        digest, size = layer.blob.digest, layer.blob.size

        tls = {
            "tls": {
                "server_certificate_bundle": str(server.cert),
                "server_private_key": str(server.key),
            }
        }
        hasher = argon2.PasswordHasher()  # the defaults an operator's hash has
        identities = {u: {"username": u, "password": hasher.hash(p)} for u, p in USERS.items()}
        allow = {"access_policy": {"default": "allow"}}
        deny = {"access_policy": {"default": "deny", "rules": RULES}}
        systems: dict[str, Deployment] = {
            PLAIN: registry_server(bench, upstream, "plain", allow),
            OPEN: registry_server(bench, upstream, "open", allow, {"server": tls}),
            SECURE: registry_server(
                bench, upstream, "secure", deny, {"server": tls, "auth": {"identity": identities}}
            ),
            DISTRIBUTION: distribution_tls(bench, upstream, pki, server),
        }
        nginx = Nginx(bench.path("nginx"), "1", tls=(server.cert, server.key))
        bench.on_exit(nginx.stop)
        assert layer.blob.path is not None
        nginx.start({"blob": layer.blob.path})

        credentials = f"{CLIENT}:{USERS[CLIENT]}"
        header = "Authorization: Basic " + base64.b64encode(credentials.encode()).decode()

        def client_args(deployment_url: str) -> list[str]:
            tls_args = ["--cacert", str(ca)] if deployment_url.startswith("https") else []
            return [*tls_args, "-u", credentials]

        # Pull through once, wait until stored; then every copy once (page cache).
        images: list[PushedImage] = [small, blob_image]
        for name in (PLAIN, OPEN, SECURE):
            registry = systems[name]
            for image in images:
                pull_through(registry, image, upstream, extra_args=client_args(registry.url))
        blob_urls = {name: d.blob_url(blob_image, digest) for name, d in systems.items()}
        blob_urls[NGINX] = f"{nginx.url}/blob"
        for url in blob_urls.values():
            curl_parallel([url], expect_size=size, extra_args=client_args(url))
        verifications_before = scrape(systems[SECURE], ca, VERIFICATIONS)
        mark = upstream.mark()

        references = {"by tag": small.tag, "by digest": small.digest}
        manifest_names = list(systems)
        rps: dict[tuple[str, str], list[float]] = {
            (s, r): [] for s in manifest_names for r in references
        }
        # The secured registry's runs: (requests/s, Argon2 verifications during the run).
        secured_runs: dict[str, list[tuple[float, float]]] = {r: [] for r in references}
        # CPU time of the serving process per request: less at the mercy of other work on
        # the machine than requests/s (contention slows a process; it hardly adds CPU).
        cpu_us: dict[tuple[str, str], list[float]] = {
            (s, r): [] for s in manifest_names for r in references
        }
        for round_ in range(args.repeat):
            for name in in_turns(manifest_names, round_):
                for ref_label, reference in references.items():
                    url = systems[name].manifest_url(small, reference)
                    before = scrape(systems[SECURE], ca, VERIFICATIONS)
                    pid = systems[name].pid
                    assert pid is not None
                    cpu_before = cpu_seconds([pid])
                    result = wrk.run(url, [header], timeout_s=WRK_TIMEOUT_S)
                    rps[name, ref_label].append(result)
                    served = result * wrk.duration
                    cpu_us[name, ref_label].append(
                        (cpu_seconds([pid]) - cpu_before) / served * 1e6 if served else float("nan")
                    )
                    if name == SECURE:
                        paid = scrape(systems[SECURE], ca, VERIFICATIONS) - before
                        secured_runs[ref_label].append((result, paid))

        blob_names = list(blob_urls)
        serving_pids = {name: d.pid for name, d in systems.items()}
        assert nginx.process is not None
        serving_pids[NGINX] = nginx_worker(nginx.process.pid)
        mibs: dict[tuple[str, int], list[float]] = {(s, n): [] for s in blob_names for n in counts}
        cpu_per_gib: dict[tuple[str, int], list[float]] = {
            (s, n): [] for s in blob_names for n in counts
        }
        for round_ in range(args.repeat):
            for name in in_turns(blob_names, round_):
                url = blob_urls[name]
                pid = serving_pids[name]
                assert pid is not None
                for n in counts:
                    cpu_before = cpu_seconds([pid])
                    wall, _ = curl_parallel(
                        [url] * n, expect_size=size, extra_args=client_args(url)
                    )
                    mibs[name, n].append(n * size / wall / MiB)
                    cpu_per_gib[name, n].append(
                        (cpu_seconds([pid]) - cpu_before) / (n * size / GiB)
                    )

        from_registries = requests_by_registry(upstream, mark)
        verifications = scrape(systems[SECURE], ca, VERIFICATIONS)

        print(machine_line("docker-registry", "nginx", "wrk", "curl"))
        print(
            f"TLS: {negotiated(systems[OPEN].host_port, ca)} (registry), "
            f"{negotiated(systems[DISTRIBUTION].host_port, ca)} (Distribution), "
            f"{negotiated(nginx.url.removeprefix('https://'), ca)} (nginx); "
            f"Argon2 {argon2.extract_parameters(identities[CLIENT]['password'])}, "
            f"bcrypt cost {BCRYPT_COST}"
        )
        print(
            f"\nwarm manifest GET: {wrk.command}, "
            "Authorization: Basic + Accept: all manifest types, "
            f"{args.repeat} rounds, medians of requests/s"
        )
        med = {key: median(values) for key, values in rps.items()}
        rows = [[name, *(f"{med[name, r]:.0f}" for r in references)] for name in manifest_names]
        # The runs during which no remembered header expired (no Argon2 at all).
        steady = {
            r: [rate for rate, paid in secured_runs[r] if paid == 0] or [float("nan")]
            for r in references
        }
        rows.insert(
            manifest_names.index(SECURE) + 1,
            [
                f"{SECURE}, runs without Argon2",
                *(f"{median(steady[r]):.0f} ({len(steady[r])} runs)" for r in references),
            ],
        )
        for label, base in (("TLS, open", OPEN), ("Distribution", DISTRIBUTION)):
            rows.append(
                [
                    f"ratio TLS+Basic+rules / {label}",
                    *(f"{med[SECURE, r] / med[base, r]:.2f}" for r in references),
                ]
            )
        rows.append(
            [
                "ratio (runs without Argon2) / TLS, open",
                *(f"{median(steady[r]) / med[OPEN, r]:.2f}" for r in references),
            ]
        )
        rows.append(
            [
                "ratio TLS, open / HTTP, open",
                *(f"{med[OPEN, r] / med[PLAIN, r]:.2f}" for r in references),
            ]
        )
        print_table(["requests/s", *references], rows)
        for ref_label, runs in secured_runs.items():
            described = ", ".join(f"{rate:.0f} ({paid:.0f} Argon2)" for rate, paid in runs)
            print(f"secured registry, {ref_label}, each run: {described}")

        print("\nCPU time of the serving process per warm manifest request, µs (medians)")
        cmed = {key: median(values) for key, values in cpu_us.items()}
        secured_steady = {
            r: [
                cpu
                for cpu, (_rate, paid) in zip(cpu_us[SECURE, r], secured_runs[r], strict=True)
                if paid == 0
            ]
            or [float("nan")]
            for r in references
        }
        rows = [[name, *(f"{cmed[name, r]:.0f}" for r in references)] for name in manifest_names]
        rows.insert(
            manifest_names.index(SECURE) + 1,
            [
                f"{SECURE}, runs without Argon2",
                *(f"{median(secured_steady[r]):.0f}" for r in references),
            ],
        )
        rows.append(
            [
                "access checks: (runs without Argon2) / TLS, open",
                *(f"{median(secured_steady[r]) / cmed[OPEN, r]:.2f}" for r in references),
            ]
        )
        rows.append(
            [
                "TLS + Basic + 3 rules (all runs) / TLS, open",
                *(f"{cmed[SECURE, r] / cmed[OPEN, r]:.2f}" for r in references),
            ]
        )
        print_table(["CPU µs/request", *references], rows)

        print(
            f"\nwarm blob GET: {size / MiB:.0f} MiB, page cache warm, {args.repeat} rounds, "
            f"medians of the aggregate MiB/s of N parallel curl clients"
        )
        bmed = {key: median(values) for key, values in mibs.items()}
        rows = [[name, *(f"{bmed[name, n]:.0f}" for n in counts)] for name in blob_names]
        for label, base in (
            ("TLS, open", OPEN),
            ("nginx TLS", NGINX),
            ("Distribution", DISTRIBUTION),
        ):
            rows.append(
                [
                    f"ratio TLS+Basic+rules / {label}",
                    *(f"{bmed[SECURE, n] / bmed[base, n]:.2f}" for n in counts),
                ]
            )
        rows.append(
            [
                "ratio TLS, open / HTTP, open",
                *(f"{bmed[OPEN, n] / bmed[PLAIN, n]:.2f}" for n in counts),
            ]
        )
        print_table(["MiB/s", *(clients_label(n) for n in counts)], rows)
        print("\nCPU seconds of the serving process per GiB served (medians)")
        gmed = {key: median(values) for key, values in cpu_per_gib.items()}
        rows = [[name, *(f"{gmed[name, n]:.2f}" for n in counts)] for name in blob_names]
        print_table(["CPU s/GiB", *(clients_label(n) for n in counts)], rows)

        print(
            f"\nsecured registry during all runs: {verifications - verifications_before:.0f} "
            f"Argon2 verifications (every other request: a remembered header); upstream "
            f"requests by the registries: {len(from_registries)}"
        )


if __name__ == "__main__":
    main()
