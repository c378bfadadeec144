"""Hook benchmark: `python -m bench.hook [--runs N]` (as root, from the repository root).

Prints, side by side in one run:
- the hook itself: interpreter start, import of syscribe.hooks.main (-X importtime), wall time and peak
  RSS of one hook run without the annotation and with it (until the tracer is attached);
- container start-to-exit, median of N, with podman (crun) and runc: no hook, the hook on a container
  without the annotation (hooks.d `when: always`), and recording;
- the tracer's RSS while it records;
- the anchor (docs/hook.md, DESIGN s.5): profile sizes recorded raw and trimmed, and how often the
  container starts under the trimmed profile, with and without the runtime's known post-filter calls.

Nothing is asserted: the numbers go to docs/hook.md. Runs are interleaved so that a slow moment of
this shared machine does not land on one mode only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOOK = Path(sys.executable).parent / "syscribe-hook"
HOOKS_D = ROOT / "crio-config" / "hooks.d" / "syscribe-hook.json"
KEY = "io.containers.trace-syscall"
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
PODMAN_RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
WORKLOAD = ["/bin/ls", "/"]


class Bench:
    def __init__(self, work: Path, runs: int) -> None:
        from syscribe.bundle import make_busybox_rootfs

        self.work = work
        self.runs = runs
        self.rootfs = make_busybox_rootfs(work / "rootfs")
        self.out = work / "profiles"
        self.out.mkdir()
        self.log = work / "hook.log"
        self.config = work / "hook.json"
        self.configure()
        self.hooks = {}
        for mode in ("none", "always", "annotated"):
            d = work / f"hooks-{mode}"
            d.mkdir()
            self.hooks[mode] = d
        doc = json.loads(HOOKS_D.read_text())
        doc["hook"]["path"] = str(HOOK)
        doc["hook"]["args"] = ["syscribe-hook", "--config", str(self.config)]
        (self.hooks["annotated"] / "syscribe-hook.json").write_text(json.dumps(doc))
        doc["when"] = {"always": True}
        (self.hooks["always"] / "syscribe-hook.json").write_text(json.dumps(doc))

    def configure(self, **values: Any) -> None:
        doc = {"outputRoots": [str(self.out)], "logFile": str(self.log), "onFailure": "fail", **values}
        self.config.write_text(json.dumps(doc))

    def entry(self) -> dict[str, Any]:
        return {"path": str(HOOK), "args": ["syscribe-hook", "--config", str(self.config)]}

    def wait_tracers(self) -> None:
        text = self.log.read_text() if self.log.exists() else ""
        for pid in {int(p) for p in re.findall(r"tracer pid (\d+)", text)}:
            wait_pid(pid)

    # -- one container ------------------------------------------------------------------------

    def podman(self, mode: str, args: list[str] = WORKLOAD) -> float:
        extra = ["--annotation", f"{KEY}=of:{self.out}/podman-{uuid.uuid4().hex[:8]}.json"] \
            if mode == "annotated" else []
        cmd = [*PODMAN, "--hooks-dir", str(self.hooks[mode]), "run", "--rm", *PODMAN_RUN, *extra,
               "--rootfs", str(self.rootfs), *args]
        start = time.monotonic()
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        took = time.monotonic() - start
        if result.returncode:
            raise SystemExit(f"podman ({mode}) failed: {result.stderr.strip()}")
        self.wait_tracers()
        return took

    def runc(self, mode: str, args: list[str] = WORKLOAD, runtime: str = "runc",
             seccomp: dict[str, Any] | None = None, out: Path | None = None) -> tuple[float, int]:
        from syscribe.bundle import make_bundle

        cid = f"bench-hook-{uuid.uuid4().hex[:12]}"
        bundle = self.work / f"bundle-{cid}"
        annotations = {KEY: f"of:{out or self.out / (cid + '.json')}"} if mode == "annotated" else None
        make_bundle(bundle, self.rootfs, args, annotations=annotations, seccomp=seccomp,
                    prestart=[self.entry()] if mode != "none" else (), runtime=runtime)
        start = time.monotonic()
        try:
            result = subprocess.run([runtime, "run", "--bundle", str(bundle), cid],
                                    stdin=subprocess.DEVNULL, capture_output=True, check=False)
            took = time.monotonic() - start
        finally:
            subprocess.run([runtime, "delete", "--force", cid], capture_output=True, check=False)
            shutil.rmtree(bundle, ignore_errors=True)
        self.wait_tracers()
        return took, result.returncode


def wait_pid(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], 120)
    finally:
        os.close(fd)


def stop(pid: int) -> None:
    """SIGTERM through a pidfd (never a recycled pid), then wait for the exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        select.select([fd], [], [], 120)
    finally:
        os.close(fd)


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f}"


def interleaved(runs: int, modes: list[str], one: Callable[[str], float]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(runs):
        for mode in modes:
            times[mode].append(one(mode))
    return times


def hook_alone(b: Bench) -> None:
    print("\n## The hook itself")
    starts = [float(subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True,
                                   text=True, check=True).stderr.splitlines()[-1].split("|")[1]) / 1000
              for _ in range(b.runs)]
    imports = []
    for _ in range(b.runs):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import syscribe.hooks.main"],
                             capture_output=True, text=True, check=True).stderr
        line = next(x for x in err.splitlines() if x.rstrip().endswith("| syscribe.hooks.main"))
        imports.append(float(line.split("|")[1]) / 1000)
    for label, samples in (("python startup, site included", starts),
                           ("import syscribe.hooks.main, cumulative", imports)):
        print(f"{label} (ms, median):".ljust(58) + f"{statistics.median(samples):>5.1f}")

    sleeper = subprocess.Popen(["unshare", "--mount", "sleep", "3600"])
    try:
        while Path(f"/proc/{sleeper.pid}/comm").read_text().strip() != "sleep":
            os.sched_yield()
        stopped: set[int] = set()
        for label, annotations in (("no annotation", {}), ("annotated, until attached", None)):
            walls, rss = [], []
            for _ in range(b.runs):
                ann = annotations if annotations is not None else \
                    {KEY: f"of:{b.out}/alone-{uuid.uuid4().hex[:8]}.json"}
                state = json.dumps({"ociVersion": "1.0.2", "id": "bench", "status": "creating",
                                    "pid": sleeper.pid, "bundle": "/b", "annotations": ann}).encode()
                start = time.monotonic()
                proc = subprocess.Popen([str(HOOK), "--config", str(b.config)], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                assert proc.stdin is not None
                proc.stdin.write(state)
                proc.stdin.close()
                _, status, usage = os.wait4(proc.pid, 0)
                walls.append(time.monotonic() - start)
                rss.append(usage.ru_maxrss / 1024)
                proc.returncode = os.waitstatus_to_exitcode(status)
                if proc.returncode:
                    raise SystemExit(f"hook ({label}) failed: {b.log.read_text()[-500:]}")
                # Each recording's tracer waits for the sleeper; stop it before the next run.
                text = b.log.read_text() if b.log.exists() else ""
                for pid in {int(p) for p in re.findall(r"tracer pid (\d+)", text)} - stopped:
                    stop(pid)
                    stopped.add(pid)
            print(f"hook wall time, {label} (ms, median):".ljust(58) + f"{median_ms(walls):>5}"
                  f"   (peak RSS {statistics.median(rss):.1f} MB)")
    finally:
        sleeper.kill()
        sleeper.wait()


def containers(b: Bench) -> None:
    print(f"\n## Container start to exit, median of {b.runs} (ms), workload `{' '.join(WORKLOAD)}`")
    modes = ["none", "always", "annotated"]
    print(f"{'':10} {'no hook':>10} {'hook, no annotation':>22} {'recording':>12}")
    for name, one in (("podman", b.podman), ("runc", lambda m: b.runc(m)[0]),
                      ("crun", lambda m: b.runc(m, runtime="crun")[0])):
        if shutil.which(name) is None:
            continue
        times = interleaved(b.runs, modes, one)
        print(f"{name:10} {median_ms(times['none']):>10} {median_ms(times['always']):>22} "
              f"{median_ms(times['annotated']):>12}")


def tracer_rss(b: Bench) -> None:
    print("\n## The tracer while it records (runc container running `sleep 1`)")
    from syscribe.bundle import make_bundle

    cid = f"bench-hook-{uuid.uuid4().hex[:12]}"
    bundle = b.work / f"bundle-{cid}"
    make_bundle(bundle, b.rootfs, ["/bin/sleep", "1"], annotations={KEY: f"of:{b.out}/rss.json"},
                prestart=[b.entry()])
    b.log.write_text("")
    proc = subprocess.Popen(["runc", "run", "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = None
        while pid is None and proc.poll() is None:
            found = re.findall(r"tracer pid (\d+)", b.log.read_text())
            pid = int(found[0]) if found else None
            time.sleep(0.01)
        if pid is not None:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            print(f"tracer RSS: {int(status['VmRSS'].split()[0]) / 1024:.1f} MB, "
                  f"peak {int(status['VmHWM'].split()[0]) / 1024:.1f} MB")
        proc.wait()
    finally:
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)
        shutil.rmtree(bundle, ignore_errors=True)
    b.wait_tracers()


def anchor(b: Bench) -> None:
    print(f"\n## The anchor: profile size and starts under the profile (of {b.runs})")
    print(f"{'':6} {'raw':>5} {'trimmed':>8} {'starts':>7} {'+runtime':>9} {'starts':>7}   left out")
    for runtime in ("runc", "crun"):
        if shutil.which(runtime) is None:
            continue
        sizes, starts, excluded = {}, {}, []
        for label, values in (("raw", {"runtimeInit": "keep", "addRuntimeSyscalls": False}),
                              ("trimmed", {"runtimeInit": "trim", "addRuntimeSyscalls": False}),
                              ("added", {"runtimeInit": "trim", "addRuntimeSyscalls": True})):
            b.configure(**values)
            out = b.out / f"anchor-{runtime}-{label}.json"
            b.runc("annotated", runtime=runtime, out=out)
            profile = json.loads(out.read_text())
            sizes[label] = len(profile["syscalls"][0]["names"])
            if label == "trimmed":
                meta = json.loads(out.with_name(out.name.replace(".json", ".meta.json")).read_text())
                excluded = meta["runtimeInit"]["excluded"]
            if label != "raw":
                starts[label] = sum(b.runc("none", runtime=runtime, seccomp=profile)[1] == 0
                                    for _ in range(b.runs))
        b.configure()
        print(f"{runtime:6} {sizes['raw']:>5} {sizes['trimmed']:>8} {starts['trimmed']:>7} "
              f"{sizes['added']:>9} {starts['added']:>7}   {' '.join(excluded)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.hook: run as root", file=sys.stderr)
        return 1
    if not HOOK.exists():
        print(f"bench.hook: {HOOK} missing: make dev", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="syscribe-bench-hook-") as tmp:
        b = Bench(Path(tmp), args.runs)
        hook_alone(b)
        containers(b)
        tracer_rss(b)
        anchor(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
