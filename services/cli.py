"""The command line: `simple-registry -c config.toml {server,frontend,cacher}`.

- `server`: all in one process, frontend plus an embedded cacher (in-process queue unless
  `[queue.redis]` is configured);
- `frontend`: the stateless HTTP service only (needs Redis and shared storage);
- `cacher`: the job consumer only;
- `prune`, `scrub`: the cache lifecycle once (cacher/lifecycle/), beside running services;
- `warm NAME:TAG`: fetch an image into the cache now (warming.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import socket
import sys
from pathlib import Path

from .cacher.lifecycle.commands import run_command
from .cacher.service import embedded_cacher, run_standalone
from .common import tracing
from .common.config import ConfigError, FsStorageSettings, Settings, load_settings, summary
from .common.listen import CannotListen, listening_socket
from .common.logs import ACCESS_LOGGER, configure_logging, use_format
from .frontend.accesslog import AuditAccessLogger
from .frontend.app import SERVER_TLS, create_app
from .frontend.serving import serve_app
from .prefork import run_workers
from .warming import warm_command

# Run as `python -m simple_registry.cli` the module is `__main__`: name it as installed.
log = logging.getLogger(f"{__package__}.cli" if __name__ == "__main__" else __name__)

EXIT_CONFIG = 2
EXIT_CANNOT_LISTEN = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="simple-registry", description="A pull-through caching OCI registry."
    )
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        type=Path,
        help="TOML configuration file; repeat to merge several (later files win)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log lines as key=value text or JSON objects (default: [observability.logging])",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("server", help="frontend and cacher in one process")
    commands.add_parser("frontend", help="the HTTP frontend only (Redis queue, shared storage)")
    commands.add_parser("cacher", help="the cache job consumer only")
    commands.add_parser("check-config", help="load the configuration, report problems, exit")
    warm = commands.add_parser(
        "warm", help="fetch an image (a tag with all its platforms) into the cache now"
    )
    warm.add_argument(
        "image", help="NAME:TAG as clients pull it, e.g. docker-io/library/nginx:1.25"
    )
    warm.add_argument(
        "--platform",
        action="append",
        default=[],
        help="only this platform of an index (os/arch[/variant]); repeat for several",
    )
    warm.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for the cacher to store it"
    )
    prune = commands.add_parser("prune", help="apply retention rules and the storage budget")
    prune.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    scrub = commands.add_parser("scrub", help="garbage-collect blobs and orphaned records")
    scrub.add_argument("--verify", action="store_true", help="re-hash every blob, remove bad ones")
    scrub.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    return parser.parse_args(argv)


def load(paths: list[Path]) -> Settings:
    settings = load_settings(paths)
    for key in settings.unknown_keys:
        log.warning("unknown configuration key %s (ignored; check for a typo)", key)
    for key in settings.ignored_keys:
        log.warning("configuration key %s is not used by a pull-through mirror (ignored)", key)
    return settings


def announce(settings: Settings) -> None:
    for line in summary.describe(settings):
        log.info("%s", line)
    for warning in summary.warnings(settings):
        log.warning("%s", warning)


def check_split_mode(settings: Settings, command: str) -> None:
    if isinstance(settings.storage, FsStorageSettings):
        log.warning(
            "blob_store.fs with `%s`: every frontend and cacher must mount the same folder "
            "(a shared volume); S3 is the usual storage for split deployments",
            command,
        )
    if settings.queue is None:
        raise ConfigError(
            "queue.redis",
            None,
            f"a [queue.redis] table: `{command}` runs as a separate process and needs a shared "
            "Redis queue (use `server` for all in one process)",
        )
    if settings.queue.job_signing_key is None:
        raise ConfigError(
            "queue.redis.job_signing_key_file",
            None,
            "a job signing key (job_signing_key_file, or job_signing_key) shared by every "
            f"frontend and cacher: `{command}` signs or checks each cache job with it",
        )


def own_job_key(settings: Settings) -> Settings:
    """`server` with Redis but no job signing key: one random key for this process and
    its workers (forked later), so only they can write jobs their cacher accepts."""
    if settings.queue is None or settings.queue.job_signing_key is not None:
        return settings
    queue = dataclasses.replace(settings.queue, job_signing_key=secrets.token_bytes(32))
    return dataclasses.replace(settings, queue=queue)


def run_server(settings: Settings, with_cacher: bool, paths: list[Path]) -> int:
    def serve(sock: socket.socket) -> None:
        # In each worker process: the exporter's thread does not survive a fork.
        tracing.configure(
            settings.observability.tracing,
            "simple-registry-" + ("server" if with_cacher else "frontend"),
        )
        app = create_app(settings, config_paths=paths)
        if with_cacher:
            app.cleanup_ctx.append(embedded_cacher)
        server_tls = app.get(SERVER_TLS)
        serve_app(
            app,
            settings.server,
            sock=sock,
            ssl_context=server_tls.context if server_tls is not None else None,
            access_log_class=AuditAccessLogger,
            shutdown_timeout=settings.server.drain_timeout_secs,
            access_log=logging.getLogger(ACCESS_LOGGER),
            print=lambda message: log.info(
                "listening on %s:%d", settings.server.bind_address, settings.server.port
            ),
        )

    sock = listening_socket(settings.server.bind_address, settings.server.port)
    if settings.server.workers == 1:
        serve(sock)
        return 0
    return run_workers(settings.server.workers, sock, serve)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format or "text")
    paths = args.config or [Path("config.toml")]
    try:
        settings = load(paths)
        if args.command in ("frontend", "cacher"):
            check_split_mode(settings, args.command)
    except ConfigError as error:
        print(f"simple-registry: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.log_format is None:
        use_format(settings.observability.log_format)
    announce(settings)
    if args.command == "check-config":
        print("configuration OK")
        return 0
    if args.command == "warm":
        try:
            return asyncio.run(warm_command(settings, args.image, args.platform, args.timeout))
        except ConfigError as error:
            print(f"simple-registry: configuration error: {error}", file=sys.stderr)
            return EXIT_CONFIG
    if args.command in ("prune", "scrub"):
        verify = getattr(args, "verify", False)
        return run_command(settings, args.command, verify=verify, dry_run=args.dry_run)
    try:
        if args.command == "cacher":
            asyncio.run(run_standalone(settings, paths))
            return 0
        return run_server(own_job_key(settings), args.command == "server", paths)
    except CannotListen as error:
        print(f"simple-registry: {error}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN


if __name__ == "__main__":
    sys.exit(main())
