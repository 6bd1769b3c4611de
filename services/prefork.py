"""Several worker processes on one listening socket (pre-fork), for `[server] workers`.

The parent binds the socket, forks the workers before any event loop exists, forwards
SIGTERM/SIGINT to them and exits with 0 only when every worker did. A worker that dies
on its own takes the others down with it: the orchestrator restarts the pod, which is
clearer at 3 a.m. than a half-alive process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


def run_workers(count: int, sock: socket.socket, serve: Callable[[socket.socket], None]) -> int:
    children: list[int] = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                serve(sock)
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    log.info("started %d worker processes: %s", count, children)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    remaining = set(children)
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            exit_code = 1
            if remaining:
                log.error("worker %d exited with %d; stopping the others", pid, code)
                forward(signal.SIGTERM, None)
    sock.close()
    return exit_code
