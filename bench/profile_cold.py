"""Where a cold miss spends its CPU: py-spy on the registry while clients fetch cold blobs.

    .venv/bin/python -m bench.profile_cold [--size-mib 1024] [--clients 1] [--rate 250]
        [--uvloop] [--upstream-tls] [--raw OUT.txt]

Starts a hosted CNCF Distribution (the upstream) with --clients blobs of --size-mib MiB,
this registry (`server`, fs storage), and `py-spy record --threads --format raw` (busy
samples only) on the registry's process; then --clients `curl` processes fetch one cold blob each, at
once. py-spy stops once the cache settled (the embedded cacher's commit included). Prints
the busy seconds per thread, the busiest leaf frames (self time) and the
functions holding most samples (inclusive), each as a share of that thread's busy samples,
ready to paste into bench/RESULTS.md. `--raw` keeps py-spy's collapsed stacks.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.cold_blob import start
from bench.harness import (
    Bench,
    MiB,
    cleanup,
    cpu_seconds,
    cpu_seconds_of,
    curl_parallel,
    machine_line,
    push_and_drop,
    require,
    upstream_for,
)

# A frame in py-spy's raw output: "function (path/to/file.py:123)".
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Leaves of a thread that waits (py-spy without --idle still shows some of them).
IDLE_LEAVES = (
    "select (selectors.py",
    "_worker (concurrent/futures/thread.py:81",
    "wait (threading",
)


def short(frame: str, with_line: bool = True) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "python3.11/", "/services/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    line = f":{match.group('line')}" if with_line and match.group("line") else ""
    return f"{match.group('func')} ({path}{line})"


def summarize(raw: str, top: int, seconds: float, rate: int) -> str:
    threads: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1].strip()  # "thread (TID): NAME"
        if thread.startswith("asyncio_"):
            thread = "asyncio_* (executor)"
        threads[thread] += count
        frames = frames[1:]
        if not frames:
            continue
        leaf = short(frames[-1])
        if any(idle in leaf for idle in IDLE_LEAVES):
            continue
        busy[thread] += count
        leaves.setdefault(thread, Counter())[leaf] += count
        seen = {short(f, with_line=False) for f in frames}
        for name in seen:
            inclusive.setdefault(thread, Counter())[name] += count
    out = []
    for thread, _ in threads.most_common():
        work = busy[thread]
        out.append(
            f"thread {thread}: {work} busy samples = {work / rate:.2f} s "
            f"({work / rate / seconds:.0%} of the {seconds:.1f} s profiled)"
        )
        if not work:
            continue
        out.append("  self (leaf frames), share of busy samples:")
        for name, count in leaves[thread].most_common(top):
            out.append(f"    {count / work:6.1%}  {name}")
        out.append("  inclusive (functions on the stack), share of busy samples:")
        # Frames on (nearly) every stack (the event loop, the module) say nothing.
        shown = [(n, c) for n, c in inclusive[thread].most_common() if c < 0.97 * work]
        for name, count in shown[:top]:
            out.append(f"    {count / work:6.1%}  {name}")
    return "\n".join(out)


def py_spy(pid: int, rate: int, output: Path) -> subprocess.Popen[bytes]:
    """`py-spy record` of a process: busy samples of every thread, raw (collapsed) stacks."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--threads"]
    args += ["--format", "raw", "--output", str(output)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(spy: subprocess.Popen[bytes]) -> None:
    """End a recording (py-spy writes its output on SIGINT)."""
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the main thread and of all other threads together."""
    found = {"main": 0.0, "others": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            seconds = cpu_seconds_of(task / "stat")
            found["main" if task.name == str(pid) else "others"] += seconds
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--upstream-tls", action="store_true")
    parser.add_argument("--raw", type=Path)
    args = parser.parse_args()
    require("docker-registry", "curl")
    with Bench("profile-cold") as bench:
        upstream, curl_args = upstream_for(bench, args.upstream_tls)
        layers = bench.layers("l", [args.size_mib] * args.clients, seed=500)
        image = push_and_drop(upstream, "bench/profile", layers)
        dep = start("server-uvloop" if args.uvloop else "server", bench, upstream, "registry")
        raw_path = bench.path("py-spy.txt")
        spy = None
        try:
            assert dep.pid is not None
            spy = py_spy(dep.pid, args.rate, raw_path)
            time.sleep(1.0)  # py-spy attaches
            profiled = time.perf_counter()
            before = cpu_seconds([dep.pid])
            threads_before = thread_cpu(dep.pid)
            wall, _ = curl_parallel(
                [dep.blob_url(image, layer.blob.digest) for layer in layers],
                expect_size=[layer.blob.size for layer in layers],
                timeout_s=600,
                extra_args=curl_args,
            )
            transfer = cpu_seconds([dep.pid]) - before
            threads = {k: v - threads_before[k] for k, v in thread_cpu(dep.pid).items()}
            dep.settle_blobs({layer.blob.digest for layer in layers}, upstream)
            settled = cpu_seconds([dep.pid]) - before
            profiled = time.perf_counter() - profiled
        finally:
            if spy is not None:
                stop(spy)
            cleanup(dep, bench, "registry")
        sent = sum(layer.blob.size for layer in layers)
        print(machine_line("docker-registry", "curl"))
        print(
            f"{args.clients} x {args.size_mib} MiB cold, loop {'uvloop' if args.uvloop else 'asyncio'}"
            f", upstream {'https' if args.upstream_tls else 'http'}: {wall:.2f} s, "
            f"{sent / wall / MiB:.0f} MiB/s; registry CPU {transfer:.2f} s during the transfer, "
            f"{settled:.2f} s until settled ({settled / sent * 1e9:.2f} s/GB); during the "
            f"transfer: event-loop thread {threads['main']:.2f} s, other threads "
            f"{threads['others']:.2f} s"
        )
        raw = raw_path.read_text()
        if args.raw is not None:
            args.raw.write_text(raw)
        print(summarize(raw, args.top, profiled, args.rate))


if __name__ == "__main__":
    main()
