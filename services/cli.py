"""The command line: `simple-registry -c config.toml {server,frontend,cacher}`.

- `server`: all in one process, frontend plus an embedded cacher (in-process queue unless
  `[queue.redis]` is configured);
- `frontend`: the stateless HTTP service only (needs Redis and shared storage);
- `cacher`: the job consumer only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

from aiohttp import web

from .cacher.service import embedded_cacher, run_standalone
from .common.config import ConfigError, FsStorageSettings, Settings, load_settings, summary
from .common.listen import CannotListen, listening_socket
from .common.logs import ACCESS_LOGGER, configure_logging
from .frontend.accesslog import AuditAccessLogger
from .frontend.app import SERVER_TLS, create_app
from .prefork import run_workers

log = logging.getLogger(__name__)

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
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("server", help="frontend and cacher in one process")
    commands.add_parser("frontend", help="the HTTP frontend only (Redis queue, shared storage)")
    commands.add_parser("cacher", help="the cache job consumer only")
    commands.add_parser("check-config", help="load the configuration, report problems, exit")
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


def run_server(settings: Settings, with_cacher: bool) -> int:
    def serve(sock: socket.socket) -> None:
        app = create_app(settings)
        if with_cacher:
            app.cleanup_ctx.append(embedded_cacher)
        server_tls = app.get(SERVER_TLS)
        web.run_app(
            app,
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
    configure_logging(args.log_level)
    paths = args.config or [Path("config.toml")]
    try:
        settings = load(paths)
        if args.command in ("frontend", "cacher"):
            check_split_mode(settings, args.command)
    except ConfigError as error:
        print(f"simple-registry: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    announce(settings)
    if args.command == "check-config":
        print("configuration OK")
        return 0
    try:
        if args.command == "cacher":
            asyncio.run(run_standalone(settings))
            return 0
        return run_server(settings, with_cacher=args.command == "server")
    except CannotListen as error:
        print(f"simple-registry: {error}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN


if __name__ == "__main__":
    sys.exit(main())
