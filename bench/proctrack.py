"""What the process tracker costs: `python -m bench.proctrack` (root).

1. Idle: the tracker thread's CPU time over --idle seconds of the machine's ordinary activity.
2. Host fork storm: a shell runs --processes short processes (fork + exec /bin/true), once without the
   tracker and once with it: the storm's wall time both ways, the tracker thread's CPU time (its own
   clock, time.thread_time), events heard, overruns (events the kernel dropped), CPU per process.
   Host processes are read (one /proc/<pid>/cgroup per fork and exec) and not remembered.
3. Container fork storm: the same inside a runc container laid out as CRI-O makes them (a crio-<id>
   cgroup under a pod's, the pod's annotations): every process is read and remembered.

Numbers go to stdout as a table and, with --json, as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from syscribe.bundle import make_bundle, make_busybox_rootfs
from syscribe.enricher.containers import ContainerResolver
from syscribe.enricher.proctrack import ProcessTracker, TrackerStats

STORM = "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"


@dataclass
class Result:
    case: str
    processes: int
    storm_seconds: float
    tracker_cpu_seconds: float
    cpu_us_per_process: float
    forks: int
    execs: int
    exits: int
    remembered: int
    overruns: int


def _settle(stats: TrackerStats, quiet: float = 0.5, limit: float = 60.0) -> None:
    """Until the tracker has heard nothing new for `quiet` seconds (it has caught up)."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        seen = stats.forks + stats.execs + stats.exits
        if seen != last:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _storm(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=3600)
    return time.monotonic() - started


def _measure(case: str, n: int, cmd: list[str]) -> Result:
    resolver = ContainerResolver()
    with ProcessTracker(resolver) as tracker:
        _settle(tracker.stats)
        cpu0 = tracker.stats.cpu_seconds
        base = asdict(tracker.stats)
        wall = _storm(cmd)
        _settle(tracker.stats)
        time.sleep(0.3)  # one more poll round, so that cpu_seconds is current
        stats = tracker.stats
        cpu = stats.cpu_seconds - cpu0
    return Result(
        case=case,
        processes=n,
        storm_seconds=round(wall, 2),
        tracker_cpu_seconds=round(cpu, 3),
        cpu_us_per_process=round(cpu / n * 1e6, 1),
        forks=stats.forks - base["forks"],
        execs=stats.execs - base["execs"],
        exits=stats.exits - base["exits"],
        remembered=stats.remembered - base["remembered"],
        overruns=stats.overruns - base["overruns"],
    )


@contextlib.contextmanager
def _crio_like_container(work: Path, n: int) -> Iterator[list[str]]:
    rootfs = make_busybox_rootfs(work / "rootfs")
    cid, pod_uid = secrets.token_hex(32), str(uuid.uuid4())
    annotations = {
        "io.kubernetes.pod.name": "storm-0",
        "io.kubernetes.pod.namespace": "bench",
        "io.kubernetes.pod.uid": pod_uid,
        "io.kubernetes.container.name": "storm",
        "io.container.manager": "cri-o",
    }
    bundle = make_bundle(work / "bundle", rootfs, ["sh", "-c", STORM.format(n=n)], annotations=annotations)
    config = json.loads((bundle / "config.json").read_text())
    pod_cgroup = f"/kubepods/besteffort/pod{pod_uid}"
    config["linux"]["cgroupsPath"] = f"{pod_cgroup}/crio-{cid}"
    (bundle / "config.json").write_text(json.dumps(config))
    try:
        yield ["runc", "run", "--bundle", str(bundle), cid]
    finally:
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False, timeout=60)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            pod = hierarchy / pod_cgroup.lstrip("/")
            for path in (pod / f"crio-{cid}", pod):
                with contextlib.suppress(OSError):
                    path.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.processes

    with ProcessTracker(ContainerResolver()) as tracker:
        time.sleep(args.idle)
        idle_cpu = tracker.stats.cpu_seconds
        idle_events = tracker.stats.forks + tracker.stats.execs + tracker.stats.exits

    host_cmd = ["sh", "-c", STORM.format(n=n)]
    without = _storm(host_cmd)
    host = _measure("host", n, host_cmd)
    with tempfile.TemporaryDirectory(prefix="bench-proctrack-") as tmp:
        with _crio_like_container(Path(tmp), n) as cmd:
            container_without = _storm(cmd)
        with _crio_like_container(Path(tmp), n) as cmd:
            container = _measure("container", n, cmd)

    print(f"idle: {idle_cpu * 1000:.1f} ms CPU over {args.idle:g} s ({idle_events} events)")
    print(f"storm without tracker: host {without:.2f} s, container {container_without:.2f} s")
    header = (
        f"{'case':<10} {'procs':>6} {'storm s':>8} {'CPU s':>7} {'us/proc':>8} {'forks':>6} {'execs':>6} "
        f"{'exits':>6} {'remembered':>10} {'overruns':>8}"
    )
    print(header)
    for r in (host, container):
        print(f"{r.case:<10} {r.processes:>6} {r.storm_seconds:>8.2f} {r.tracker_cpu_seconds:>7.3f} "
              f"{r.cpu_us_per_process:>8.1f} {r.forks:>6} {r.execs:>6} {r.exits:>6} {r.remembered:>10} "
              f"{r.overruns:>8}")
    if args.json:
        print(json.dumps({
            "idle_cpu_seconds": idle_cpu, "idle_seconds": args.idle,
            "storm_without_tracker": {"host": without, "container": container_without},
            "results": [asdict(host), asdict(container)],
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
