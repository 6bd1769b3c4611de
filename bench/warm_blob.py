"""Warm blob GET throughput: this registry vs CNCF Distribution vs nginx (sendfile).

    .venv/bin/python -m bench.warm_blob [--size-mib 256] [--repeat 5] [--clients 1,8]

One blob (an uncompressed tar layer of --size-mib MiB) is pushed to a Distribution, which
then serves it as a hosted registry. The registry (`server`, fs storage) pulls it once
through and is measured after the cacher stored it. nginx serves a copy of the same file
(`sendfile on; tcp_nopush on;`, one worker like the registry's one process). Each
measurement runs N `curl -o /dev/null` processes at once; throughput is N x size / wall
time. Systems take turns within each round; medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import ssl as ssl_module
import subprocess
from pathlib import Path

from bench.harness import (
    Bench,
    MiB,
    clients_label,
    curl_parallel,
    direct,
    in_turns,
    machine_line,
    median,
    print_table,
    pull_through,
    push_image,
    registry_server,
    requests_by_registry,
    require,
    which,
    write_layer,
)
from tests.fixtures.ports import free_port, wait_for_http

NGINX_CONF = """\
{user}worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    default_type application/octet-stream;
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port}{ssl};
        root {root}/www;{ssl_lines}
    }}
}}
"""


class Nginx:
    """nginx in the foreground (`-g 'daemon off;'`), everything under one folder; with
    `tls` (a certificate and key) it serves HTTPS only (`ssl_certificate`)."""

    def __init__(self, root: Path, workers: str, tls: tuple[Path, Path] | None = None):
        self.root = root
        self.workers = workers
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, files: dict[str, Path]) -> Nginx:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "www").mkdir(parents=True, exist_ok=True)
        for name, source in files.items():
            shutil.copyfile(source, self.root / "www" / name)
        conf = self.root / "nginx.conf"
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dir
        ssl, ssl_lines = "", ""
        if self.tls is not None:
            ssl = " ssl"
            # TLS 1.3 as well (1.22 offers up to 1.2 unless told): what the others speak.
            ssl_lines = (
                f"\n        ssl_certificate {self.tls[0]};"
                f"\n        ssl_certificate_key {self.tls[1]};"
                "\n        ssl_protocols TLSv1.2 TLSv1.3;"
            )
        conf.write_text(
            NGINX_CONF.format(
                user=user,
                workers=self.workers,
                root=self.root,
                port=self.port,
                ssl=ssl,
                ssl_lines=ssl_lines,
            )
        )
        nginx = which("nginx") or "nginx"
        args = [nginx, "-p", str(self.root), "-e", str(self.root / "error.log"), "-c", str(conf)]
        with (self.root / "stderr.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*args, "-g", "daemon off;"], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        context = None
        if self.tls is not None:
            context = ssl_module.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        wait_for_http(
            self.url + "/",
            15,
            log_path=self.root / "error.log",
            process=self.process,
            context=context,
        )
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", default="1,8", help="comma-separated parallel clients")
    parser.add_argument("--nginx-workers", default="1", help='nginx worker_processes ("auto")')
    args = parser.parse_args()
    require("docker-registry", "curl", "nginx")
    counts = [int(c) for c in args.clients.split(",")]
    with Bench("warm-blob") as bench:
        upstream = bench.upstream()
        layer = write_layer(bench.path("data", "blob.tar"), args.size_mib * MiB, seed=1)
        image = push_image(upstream, "bench/blob", "1", [layer])
        digest, size = layer.blob.digest, layer.blob.size

        registry = registry_server(bench, upstream, "registry")
        pull_through(registry, image, upstream, by_digest=False)

        nginx = Nginx(bench.path("nginx"), args.nginx_workers)
        bench.on_exit(nginx.stop)
        assert layer.blob.path is not None
        nginx.start({"blob": layer.blob.path})

        systems = {
            "registry (server, fs)": registry.blob_url(image, digest),
            "Distribution (hosted)": direct(upstream).blob_url(image, digest),
            "nginx (sendfile)": f"{nginx.url}/blob",
        }
        for url in systems.values():  # page cache warm for every copy of the file
            curl_parallel([url], expect_size=size)
        mark = upstream.mark()
        results: dict[tuple[str, int], list[float]] = {(s, n): [] for s in systems for n in counts}
        names = list(systems)
        for round_ in range(args.repeat):
            for name in in_turns(names, round_):
                for n in counts:
                    wall, _ = curl_parallel([systems[name]] * n, expect_size=size)
                    results[name, n].append(n * size / wall / MiB)
        registry_upstream = requests_by_registry(upstream, mark)

        print(machine_line("docker-registry", "nginx", "curl"))
        print(
            f"blob: {size / MiB:.0f} MiB, warm (page cache), {args.repeat} rounds, medians; "
            f"aggregate MiB/s of N parallel curl clients; nginx worker_processes "
            f"{args.nginx_workers}"
        )
        med = {key: median(values) for key, values in results.items()}
        rows = [[name, *(f"{med[name, n]:.0f}" for n in counts)] for name in names]
        reg, dist, ngx = names
        rows.append(["ratio registry/nginx", *(f"{med[reg, n] / med[ngx, n]:.2f}" for n in counts)])
        rows.append(
            ["ratio registry/Distribution", *(f"{med[reg, n] / med[dist, n]:.2f}" for n in counts)]
        )
        print_table(["MiB/s", *(clients_label(n) for n in counts)], rows)
        print(f"upstream requests by the registry during the warm runs: {len(registry_upstream)}")


if __name__ == "__main__":
    main()
