"""Resident recorder benchmark: `python -m bench.resident [--runs N]` (as root, repository root).

Prints, in one run:
- container start with the hook, podman `/bin/true`, median of N (interleaved): no hook; hook not
  recording (hooks.d `always: true`, no annotation); recording by the per-container tracer (fallback);
  recording by the resident recorder. Each hook mode twice: the `syscribe-hook` console script, and
  `python3 -I -S hooks/isolated.py`.
- host syscall cost: `dd if=/dev/zero of=/dev/null bs=1 count=1000000` (median of 3) with no recorder,
  and with the resident recorder and 0/1/10/30/100 recorded podman containers running `sleep`;
- the recorder's RSS with 0 and 100 recordings, and the kernel memory of its maps;
- 50 containers recorded at once: profiles written, valid, and each enforced on its workload.

Nothing is asserted: the numbers go to docs/recording.md and docs/hook.md.
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
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOOK = BIN / "syscribe-hook"
SYSCRIBE = BIN / "syscribe"
HOOKS_D = ROOT / "crio-config" / "hooks.d" / "syscribe-hook.json"
KEY = "io.containers.trace-syscall"
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
PODMAN_RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
PIN_DIR = "/sys/fs/bpf/syscribe-bench"
DD = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=1000000"]


def isolated_script() -> str:
    import syscribe.hooks

    return str(Path(syscribe.hooks.__file__).parent / "isolated.py")


class Bench:
    def __init__(self, work: Path) -> None:
        from syscribe.bundle import make_busybox_rootfs

        self.work = work
        self.rootfs = make_busybox_rootfs(work / "rootfs")
        self.out = work / "profiles"
        self.out.mkdir()
        self.log = work / "hook.log"
        self.sock = work / "rec.sock"
        self.recorder: subprocess.Popen[bytes] | None = None
        base = {"outputRoots": [str(self.out)], "logFile": str(self.log), "onFailure": "fail"}
        self.configs = {
            "resident": work / "resident.json",
            "fallback": work / "fallback.json",
        }
        self.configs["resident"].write_text(json.dumps({**base, "recorderSocket": str(self.sock)}))
        self.configs["fallback"].write_text(json.dumps({**base, "recorderSocket": None}))
        self.hooks: dict[str, Path] = {"none": work / "hooks-none", "trivial": work / "hooks-trivial"}
        self.hooks["none"].mkdir()
        self.hooks["trivial"].mkdir()
        # What podman itself pays to run any hook: /bin/true in its place.
        trivial = json.loads(HOOKS_D.read_text())
        trivial["hook"] = {"path": "/bin/true", "args": ["true"]}
        trivial["when"] = {"always": True}
        (self.hooks["trivial"] / "syscribe-hook.json").write_text(json.dumps(trivial))
        for launcher in ("console", "isolated"):
            for mode in ("always", "fallback", "resident"):
                d = work / f"hooks-{mode}-{launcher}"
                d.mkdir()
                doc = json.loads(HOOKS_D.read_text())
                config = str(self.configs["fallback" if mode == "fallback" else "resident"])
                if launcher == "console":
                    doc["hook"]["path"] = str(HOOK)
                    doc["hook"]["args"] = ["syscribe-hook", "--config", config]
                else:
                    doc["hook"]["path"] = "/usr/bin/python3"
                    doc["hook"]["args"] = ["python3", "-I", "-S", isolated_script(), "--config", config]
                if mode == "always":
                    doc["when"] = {"always": True}
                (d / "syscribe-hook.json").write_text(json.dumps(doc))
                self.hooks[f"{mode}-{launcher}"] = d

    # -- the recorder -------------------------------------------------------------------------
    def start_recorder(self) -> None:
        self.recorder = subprocess.Popen(
            [str(SYSCRIBE), "recorder", "--config", str(self.configs["resident"]), "--pin-dir", PIN_DIR,
             "--state-dir", str(self.work / "state")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert self.recorder.stderr is not None
        while line := self.recorder.stderr.readline().decode():
            if "listening at" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise SystemExit("the recorder did not start")

    def _drain(self) -> None:
        if self.recorder is not None and self.recorder.stderr is not None:
            for _ in self.recorder.stderr:
                pass

    def stop_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.send_signal(signal.SIGTERM)
            self.recorder.wait(timeout=300)
            self.recorder = None

    def recorder_rss_mb(self) -> float:
        assert self.recorder is not None
        text = Path(f"/proc/{self.recorder.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]

    # -- containers ---------------------------------------------------------------------------
    def podman_run(self, hooks: str, args: list[str], annotate: Path | None = None,
                   extra: list[str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
        ann = ["--annotation", f"{KEY}=of:{annotate}"] if annotate is not None else []
        cmd = [*PODMAN, "--hooks-dir", str(self.hooks[hooks]), "run", "--rm", *PODMAN_RUN, *(extra or []),
               *ann, "--rootfs", str(self.rootfs), *args]
        start = time.monotonic()
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return time.monotonic() - start, result

    def wait_tracers(self) -> None:
        text = self.log.read_text() if self.log.exists() else ""
        for pid in {int(p) for p in re.findall(r"tracer pid (\d+)", text)}:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                select.select([fd], [], [], 120)
            finally:
                os.close(fd)


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def start_cost(bench: Bench, runs: int) -> None:
    kinds = ("always", "fallback", "resident")
    modes = ["none", "trivial"] + [f"{m}-{how}" for how in ("console", "isolated") for m in kinds]
    samples: dict[str, list[float]] = {m: [] for m in modes}
    bench.start_recorder()
    try:
        for m in modes:  # warm caches once
            quiet = m in ("none", "trivial") or m.startswith("always")
            warm = None if quiet else bench.out / f"warm-{m}.json"
            bench.podman_run(m, ["/bin/true"], warm)
            bench.wait_tracers()
        for _ in range(runs):
            for m in modes:
                annotate = None if m in ("none", "trivial") or m.startswith("always") else \
                    bench.out / f"start-{uuid.uuid4().hex[:8]}.json"
                took, result = bench.podman_run(m, ["/bin/true"], annotate)
                if result.returncode:
                    raise SystemExit(f"podman ({m}) failed: {result.stderr.strip()}")
                samples[m].append(took)
                bench.wait_tracers()
    finally:
        bench.stop_recorder()
    base = ms(samples["none"])
    print(f"\n### Container start, podman /bin/true, median of {runs} (ms; + over no hook)\n")
    print("| | `syscribe-hook` (console script) | `python3 -I -S hooks/isolated.py` |")
    print("| --- | --- | --- |")
    print(f"| no hook | {base:.0f} | |")
    trivial = ms(samples["trivial"])
    print(f"| a hook that is `/bin/true` (podman's own cost of a hook) | {trivial:.0f} "
          f"(+{trivial - base:.0f}) | |")
    labels = {"always": "hook, not recording", "fallback": "recording, per-container tracer (fallback)",
              "resident": "recording, resident recorder"}
    for m, label in labels.items():
        c, i = ms(samples[f"{m}-console"]), ms(samples[f"{m}-isolated"])
        print(f"| {label} | {c:.0f} (+{c - base:.0f}) | {i:.0f} (+{i - base:.0f}) |")


def dd_ms() -> float:
    times = []
    for _ in range(3):
        start = time.monotonic()
        subprocess.run(DD, capture_output=True, check=True)
        times.append(time.monotonic() - start)
    return ms(times)


def scale(bench: Bench, levels: list[int]) -> None:
    from syscribe.recorder.resident import ResidentProgram

    rows: list[tuple[str, float]] = [("no recorder", dd_ms())]
    names: list[str] = []
    rss: dict[int, float] = {}
    memory: dict[str, int] = {}
    bench.start_recorder()
    try:
        for level in levels:
            while len(names) < level:
                name = f"bench-res-{uuid.uuid4().hex[:8]}"
                cmd = [*PODMAN, "--hooks-dir", str(bench.hooks["resident-isolated"]), "run", "-d", "--rm",
                       "--name", name, *PODMAN_RUN, "--annotation", f"{KEY}=of:{bench.out}/{name}.json",
                       "--rootfs", str(bench.rootfs), "/bin/sleep", "3600"]
                result = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if result.returncode:
                    raise SystemExit(f"podman run -d failed at {len(names)}: {result.stderr.strip()}")
                names.append(name)
            rows.append((f"resident, {level} recordings", dd_ms()))
            rss[level] = bench.recorder_rss_mb()
        program = ResidentProgram(PIN_DIR)
        program.open()
        memory = program.memory()
        slots = program.slots
        program.close()
    finally:
        for i in range(0, len(names), 20):
            subprocess.run([*PODMAN, "rm", "-f", "-t", "0", *names[i:i + 20]], capture_output=True,
                           check=False)
        bench.stop_recorder()
    one = next((v for k, v in rows if k == "resident, 1 recordings"), None)
    print("\n### Host syscall cost: dd bs=1 count=1000000, median of 3 (ms)\n")
    print("| | ms | vs 1 recording |")
    print("| --- | --- | --- |")
    for label, value in rows:
        rel = f"{value / one:.2f}x" if one else ""
        print(f"| {label} | {value:.0f} | {rel} |")
    print("\n### Resident recorder memory\n")
    for level, value in rss.items():
        print(f"- RSS with {level} recordings: {value:.1f} MB")
    total = sum(memory.values())
    detail = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in memory.items())
    print(f"- kernel memory of the maps ({slots} slots): {total / 1024 / 1024:.1f} MiB ({detail})")


def fifty(bench: Bench, count: int) -> None:
    from syscribe import ociprofile as prof

    # The rootfs is shared and kept between runs: every path a workload creates is new.
    def workload(i: int, phase: str) -> list[str]:
        tag = f"{phase}-{i}-{uuid.uuid4().hex[:6]}"
        return [["/bin/ls", "/"], ["/bin/mkdir", f"/tmp/d-{tag}"], ["/bin/ln", "-s", "/x", f"/tmp/l-{tag}"],
                ["/bin/cat", "/etc/hostname"]][i % 4]

    jobs = [(bench.out / f"fifty-{i}.json", i) for i in range(count)]
    results: list[subprocess.CompletedProcess[str] | None] = [None] * count
    bench.start_recorder()
    try:
        def run(i: int) -> None:
            results[i] = bench.podman_run("resident-isolated", workload(i, "rec"), jobs[i][0])[1]

        start = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - start
    finally:
        bench.stop_recorder()  # writes whatever has exited
    started = sum(1 for r in results if r is not None and r.returncode == 0)
    valid = enforced = 0
    for out, i in jobs:
        try:
            prof.loads(out.read_bytes())
        except (OSError, prof.ProfileError):
            continue
        meta = json.loads(out.with_name(out.stem + ".meta.json").read_text())
        if meta.get("recorder") != "resident" or meta.get("partial"):
            continue
        valid += 1
        _, again = bench.podman_run("none", workload(i, "enf"), extra=["--security-opt", f"seccomp={out}"])
        enforced += again.returncode == 0
    print(f"\n### {count} containers recorded at once (podman, resident recorder)\n")
    print(f"- started: {started}/{count} in {took:.1f} s; profiles written and valid: {valid}/{count}; "
          f"each enforced on its own workload: {enforced}/{count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--levels", default="0,1,10,30,100")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--only", choices=("start", "scale", "fifty"), default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    work = Path(tempfile.mkdtemp(prefix="syscribe-bench-resident-"))
    try:
        bench = Bench(work)
        if args.only in (None, "start"):
            start_cost(bench, args.runs)
        if args.only in (None, "scale"):
            scale(bench, [int(x) for x in args.levels.split(",")])
        if args.only in (None, "fifty"):
            fifty(bench, args.concurrent)
    finally:
        from syscribe.recorder.resident import ResidentProgram

        ResidentProgram(PIN_DIR).unload()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
