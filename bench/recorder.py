"""Recorder benchmark: `python -m bench.recorder` (as root, from the repository root).

Prints, for the core and bcc backends side by side:
- attach latency (open/compile + load + attach) and the RSS of a fresh Python process that attached;
- the cost per syscall of a getppid loop with no tracer, with a tracer watching another namespace
  (what every process on the node pays while a recording runs), and with the tracer counting it;
- the wall time of recording `busybox true` end to end.

Nothing is asserted: the numbers go to docs/recording.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BACKENDS = ("core", "bcc")

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / n);
    return 0;
}
"""

# Runs in a fresh interpreter so that the RSS is that of a process that did only this.
ATTACH_SCRIPT = r"""
import json, os, sys, time
t0 = time.monotonic()
from syscribe.recorder import open_tracer
from syscribe.recorder.base import Target
tracer = open_tracer(sys.argv[1])
t1 = time.monotonic()
tracer.attach(Target.of_pid(int(sys.argv[2])))
t2 = time.monotonic()
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
kb = lambda k: int(status[k].split()[0])
tracer.close()
print(json.dumps({"import_open": t1 - t0, "attach": t2 - t1, "rss_kb": kb("VmRSS"), "hwm_kb": kb("VmHWM")}))
"""


@contextmanager
def other_namespace() -> Iterator[int]:
    """A process idling in a mount and pid namespace of its own; yields its pid as seen here."""
    proc = subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--kill-child", "/bin/busybox", "sleep", "3600"]
    )
    try:
        for _ in range(500):
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids and os.readlink(f"/proc/{kids[0]}/ns/mnt") != os.readlink("/proc/self/ns/mnt"):
                yield int(kids[0])
                return
            time.sleep(0.01)
        raise RuntimeError("the idle namespace did not start")
    finally:
        proc.kill()
        proc.wait()


def compile_loop(workdir: Path) -> Path:
    src = workdir / "loop.c"
    src.write_text(LOOP_C)
    exe = workdir / "loop"
    subprocess.run(["clang-14", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def attach_numbers(backend: str, target: int, runs: int) -> dict[str, float]:
    rows = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", ATTACH_SCRIPT, backend, str(target)],
            check=True, capture_output=True, text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def loop_ns(loop: Path, calls: int) -> float:
    out = subprocess.run([str(loop), str(calls)], check=True, capture_output=True, text=True).stdout
    return float(out)


def loop_ns_watched(backend: str, loop: Path, calls: int, target: int) -> float:
    from syscribe.recorder import open_tracer
    from syscribe.recorder.base import Target

    tracer = open_tracer(backend)
    try:
        tracer.attach(Target.of_pid(target))
        return loop_ns(loop, calls)
    finally:
        tracer.close()


def loop_ns_counted(backend: str, loop: Path, calls: int) -> float:
    from syscribe.recorder import open_tracer
    from syscribe.recorder.workload import run_traced

    tracer = open_tracer(backend)
    out = Path(tempfile.mkstemp(prefix="syscribe-bench-")[1])
    try:
        with out.open("w") as sink:
            saved = os.dup(1)
            os.dup2(sink.fileno(), 1)
            try:
                result = run_traced([str(loop), str(calls)], tracer)
            finally:
                os.dup2(saved, 1)
                os.close(saved)
        counted = sum(n for (a, nr), n in result.recording.counts.items() if nr == 110 and a.name == "x86_64")
        if counted < calls:
            raise RuntimeError(f"{backend} counted {counted} getppid calls of {calls}")
        return float(out.read_text())
    finally:
        tracer.close()
        out.unlink()


def record_wall(backend: str) -> float:
    from syscribe.recorder.workload import record_command

    start = time.monotonic()
    record_command(["/bin/busybox", "true"], backend)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2_000_000)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.recorder: run as root (it loads eBPF programs)")
    backends = [b for b in args.backends.split(",") if b]
    rows: dict[str, dict[str, str]] = {b: {} for b in backends}
    with tempfile.TemporaryDirectory() as tmp, other_namespace() as idle:
        loop = compile_loop(Path(tmp))
        for b in backends:
            a = attach_numbers(b, idle, args.runs)
            rows[b]["import + open tracer (ms)"] = f"{a['import_open'] * 1000:.1f}"
            rows[b]["attach: load + attach (ms)"] = f"{a['attach'] * 1000:.1f}"
            rows[b]["RSS after attach (MB)"] = f"{a['rss_kb'] / 1024:.1f}"
            rows[b]["peak RSS (MB)"] = f"{a['hwm_kb'] / 1024:.1f}"
            # Interleaved, and the fastest of each kept: other load on the machine only adds time.
            base, watched, counted = [], [], []
            for _ in range(args.runs):
                base.append(loop_ns(loop, args.calls))
                watched.append(loop_ns_watched(b, loop, args.calls, idle))
                counted.append(loop_ns_counted(b, loop, args.calls))
            lo_base, lo_watched, lo_counted = min(base), min(watched), min(counted)
            rows[b]["getppid, no tracer (ns/call)"] = f"{lo_base:.1f}"
            rows[b]["getppid, other ns watched (ns/call)"] = f"{lo_watched:.1f} ({lo_watched - lo_base:+.1f})"
            rows[b]["getppid, counted (ns/call)"] = f"{lo_counted:.1f} ({lo_counted - lo_base:+.1f})"
            wall = median_of(args.runs, lambda b=b: record_wall(b))
            rows[b]["record `busybox true` (ms)"] = f"{wall * 1000:.0f}"
    labels = list(next(iter(rows.values())))
    width = max(map(len, labels))
    cols = [max(len(b), *(len(rows[b][k]) for k in labels)) for b in backends]
    print(f"{'':{width}}  " + "  ".join(f"{b:>{c}}" for b, c in zip(backends, cols, strict=True)))
    for k in labels:
        print(f"{k:{width}}  " + "  ".join(f"{rows[b][k]:>{c}}" for b, c in zip(backends, cols, strict=True)))
    print(
        f"\n{os.uname().release}, {os.cpu_count()} CPUs; attach and RSS: median of {args.runs} fresh "
        f"processes; ns/call: fastest of {args.runs} interleaved runs of {args.calls} calls"
    )


if __name__ == "__main__":
    main()
