"""The hook for real: runc, crun and podman run it at prestart; the profile it writes is enforced by the
same runtime; the anchored profile is enough to start the container; nothing from outside gets in.

The tracer outlives the hook (that is the point), so a test waits for it: the hook logs the tracer's
pid, and `HookEnv.wait_tracers` waits on a pidfd of each until it has exited (no sleeps, no timed
assertions). Whatever a test starts is stopped in `finally` blocks and the fixture's teardown.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syscribe.bundle import make_bundle, run_container
from syscribe.hooks.annotation import KEY
from tests.support.prereq import require

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parent.parent
HOOK = Path(sys.executable).parent / "syscribe-hook"
HOOKS_D = ROOT / "crio-config" / "hooks.d" / "syscribe-hook.json"
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
PODMAN_RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
LS = ["/bin/ls", "/"]
MKDIR = ["/bin/mkdir", "/tmp/syscribe-hook-test-dir"]
WAIT_MS = 120_000  # a hang guard for waiting on a tracer, not a timing bound


@dataclass
class HookEnv:
    tmp: Path
    root: Path
    config_path: Path
    log: Path

    def configure(self, **values: Any) -> None:
        config = {
            "outputRoots": [str(self.root)],
            "inputRoots": [str(self.tmp)],  # the tests' `if:` profiles live in their temp dir
            "logFile": str(self.log),
            "onFailure": "fail",
            **values,
        }
        self.config_path.write_text(json.dumps(config))

    def entry(self) -> dict[str, Any]:
        return {"path": str(HOOK), "args": ["syscribe-hook", "--config", str(self.config_path)]}

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def tracer_pids(self) -> list[int]:
        return [int(m) for line in self.lines() for m in re.findall(r"tracer pid (\d+)", line)]

    def wait_tracers(self) -> None:
        for pid in self.tracer_pids():
            wait_pid(pid)

    def kill_tracers(self) -> None:
        for pid in self.tracer_pids():
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(pid)
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                finally:
                    os.close(fd)

    def run_hook(self, state: Mapping[str, Any] | bytes, *args: str) -> subprocess.CompletedProcess[str]:
        data = state if isinstance(state, bytes) else json.dumps(state).encode()
        argv = [str(HOOK), *(args or ("--config", str(self.config_path)))]
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False)
        self.wait_tracers()
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def written(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if not p.is_dir())


def wait_pid(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(WAIT_MS):
            pytest.fail(f"tracer {pid} still running after {WAIT_MS / 1000:g} s")
    finally:
        os.close(fd)


def new_env(tmp_path: Path) -> HookEnv:
    """An output root, a hook config (onFailure: fail, so that problems show) and its log."""
    root = tmp_path / "profiles"
    root.mkdir()
    env = HookEnv(tmp_path, root, tmp_path / "hook.json", tmp_path / "hook.log")
    env.configure()
    return env


@pytest.fixture
def hookenv(tmp_path: Path) -> Iterator[HookEnv]:
    env = new_env(tmp_path)
    try:
        yield env
    finally:
        env.kill_tracers()


def container(
    env: HookEnv,
    rootfs: Path,
    runtime: str,
    args: Sequence[str],
    *,
    annotations: Mapping[str, str] | None = None,
    seccomp: Mapping[str, Any] | None = None,
    hook: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a busybox container to completion (and delete it); wait for any tracer it started."""
    cid, bundle = prepare(env, rootfs, runtime, args, annotations=annotations, seccomp=seccomp, hook=hook)
    result = run_prepared(runtime, cid, bundle)
    env.wait_tracers()
    return result


def prepare(
    env: HookEnv,
    rootfs: Path,
    runtime: str,
    args: Sequence[str],
    *,
    annotations: Mapping[str, str] | None = None,
    seccomp: Mapping[str, Any] | None = None,
    hook: bool = True,
) -> tuple[str, Path]:
    # make_bundle runs `<runtime> spec` in a directory named after this process: not from threads.
    cid = f"syscribe-hook-{uuid.uuid4().hex[:12]}"
    bundle = env.tmp / f"bundle-{cid}"
    make_bundle(
        bundle, rootfs, args, annotations=annotations, seccomp=seccomp,
        prestart=[env.entry()] if hook else (), runtime=runtime,
    )
    return cid, bundle


def run_prepared(runtime: str, cid: str, bundle: Path) -> subprocess.CompletedProcess[str]:
    try:
        return run_container(bundle, cid, runtime=runtime, timeout=120)
    finally:
        subprocess.run([runtime, "delete", "--force", cid], capture_output=True, check=False)
        shutil.rmtree(bundle, ignore_errors=True)


def profile_names(path: Path) -> set[str]:
    doc = json.loads(path.read_text())
    return {n for rule in doc["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}


def denied(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "Operation not permitted" in result.stdout + result.stderr


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_record_then_enforce(hookenv: HookEnv, busybox_rootfs: Path, runtime: str) -> None:
    require("root", "ebpf", runtime, "busybox")
    out = hookenv.root / "team" / runtime / "ls.json"  # directories below the root are created
    ran = container(hookenv, busybox_rootfs, runtime, LS, annotations={KEY: f"of:{out}"})
    assert ran.returncode == 0, ran.stderr
    assert "bin" in ran.stdout
    assert hookenv.written() == [f"team/{runtime}/ls.json", f"team/{runtime}/ls.meta.json"]
    profile = json.loads(out.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = profile_names(out)
    assert {"execve", "getdents64"} <= names
    assert not {"mkdir", "mkdirat", "pivot_root", "sethostname"} & names
    meta = json.loads((out.parent / "ls.meta.json").read_text())
    assert meta["runtime"] == runtime and meta["backend"] == "core"
    assert meta["runtimeInit"]["anchorSeen"] is True
    assert "pivot_root" in meta["runtimeInit"]["excluded"]
    assert meta["containerID"].startswith("syscribe-hook-")
    assert meta["profileSHA256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert any("wrote" in line and str(out) in line for line in hookenv.lines())

    # Enforced by the same runtime: the same command runs, another is denied with EPERM.
    for _ in range(3):
        again = container(hookenv, busybox_rootfs, runtime, LS, seccomp=profile, hook=False)
        assert again.returncode == 0, again.stderr
    other = container(hookenv, busybox_rootfs, runtime, MKDIR, seccomp=profile, hook=False)
    assert denied(other), other.stdout + other.stderr


@pytest.mark.parametrize("name", ["€" * 80 + ".json", "n" * 245 + ".json"], ids=["multibyte", "ascii"])
def test_long_names_the_grammar_accepts_are_written(
    hookenv: HookEnv, busybox_rootfs: Path, name: str
) -> None:
    """A name the annotation accepts is one the hook can write: profile, metadata and temporaries
    (once `.<name>.<12 hex>.tmp`, past NAME_MAX at the end with the container already run)."""
    require("root", "ebpf", "runc", "busybox")
    out = hookenv.root / name
    ran = container(hookenv, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{out}"})
    assert ran.returncode == 0, ran.stderr
    meta = name.removesuffix(".json") + ".meta.json"
    assert hookenv.written() == sorted([name, meta]), hookenv.lines()
    assert "execve" in profile_names(out)


def test_podman_with_rm(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    """podman reads the shipped hooks.d file (containers' hooks library, as CRI-O does) and runs the
    hook; `--rm` removes the container as soon as it exits, and the profile is still written."""
    require("root", "ebpf", "podman", "busybox")
    hooks_dir = hookenv.tmp / "hooks.d"
    hooks_dir.mkdir()
    doc = json.loads(HOOKS_D.read_text())
    doc["hook"]["path"] = str(HOOK)
    doc["hook"]["args"] = ["syscribe-hook", "--config", str(hookenv.config_path)]
    (hooks_dir / "syscribe-hook.json").write_text(json.dumps(doc))
    out = hookenv.root / "podman" / "ls.json"
    name = f"syscribe-hook-{uuid.uuid4().hex[:12]}"
    try:
        ran = subprocess.run(
            [*PODMAN, "--hooks-dir", str(hooks_dir), "run", "--rm", "--name", name, *PODMAN_RUN,
             "--annotation", f"{KEY}=of:{out}", "--rootfs", str(busybox_rootfs), *LS],
            capture_output=True, text=True, timeout=120, check=False,
        )
        hookenv.wait_tracers()
        assert ran.returncode == 0, ran.stderr
        listed = subprocess.run([*PODMAN, "ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}"],
                                capture_output=True, text=True, check=True)
        assert name not in listed.stdout  # --rm did its job
        assert out.exists(), hookenv.lines()
        meta = json.loads((out.parent / "ls.meta.json").read_text())
        assert meta["runtime"] in ("crun", "runc") and meta["runtimeInit"]["anchorSeen"]

        def enforced(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*PODMAN, "run", "--rm", *PODMAN_RUN, "--security-opt", f"seccomp={out}",
                 "--rootfs", str(busybox_rootfs), *args],
                capture_output=True, text=True, timeout=120, check=False,
            )

        same = enforced(LS)
        assert same.returncode == 0, same.stderr
        assert denied(enforced(MKDIR))
    finally:
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True, check=False)


def test_input_profile_extends_and_blocked_stays_blocked(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "runc", "busybox")
    base = hookenv.tmp / "base.json"
    base.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"},
        ],
    }))
    out = hookenv.root / "mkdir.json"
    ran = container(hookenv, busybox_rootfs, "runc", MKDIR, annotations={KEY: f"if:{base};of:{out}"})
    assert ran.returncode == 0, ran.stderr  # recorded without any filter: mkdir succeeded
    doc = json.loads(out.read_text())
    assert doc["syscalls"][0] == {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    assert doc["syscalls"][1] == {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}
    recorded = doc["syscalls"][2]
    assert recorded["action"] == "SCMP_ACT_ALLOW" and "execve" in recorded["names"]
    assert not {"mkdir", "mkdirat"} & set(recorded["names"])
    meta = json.loads((hookenv.root / "mkdir.meta.json").read_text())
    assert meta["input"] == str(base)
    assert any("mkdir" in w for w in meta["warnings"])
    # Enforced: the container starts, and the workload's mkdir is still blocked.
    again = container(hookenv, busybox_rootfs, "runc", MKDIR, seccomp=doc, hook=False)
    assert denied(again), again.stdout + again.stderr


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_anchored_profile_starts_the_container_and_is_smaller(
    hookenv: HookEnv, busybox_rootfs: Path, runtime: str
) -> None:
    """DESIGN s.5: the runtime's calls before its first prctl (mounts, pivot_root...) stay out."""
    require("root", "ebpf", runtime, "busybox")
    trimmed, raw = hookenv.root / "trimmed.json", hookenv.root / "raw.json"
    hookenv.configure(runtimeInit="trim")
    assert container(hookenv, busybox_rootfs, runtime, LS, annotations={KEY: f"of:{trimmed}"}).returncode == 0
    hookenv.configure(runtimeInit="keep")
    assert container(hookenv, busybox_rootfs, runtime, LS, annotations={KEY: f"of:{raw}"}).returncode == 0
    small, big = profile_names(trimmed), profile_names(raw)
    assert small < big
    assert {"pivot_root", "mount", "sethostname"} <= big - small
    raw_meta = json.loads((hookenv.root / "raw.meta.json").read_text())
    assert raw_meta["runtimeInit"]["mode"] == "keep" and raw_meta["runtimeInit"]["excluded"] == []
    profile = json.loads(trimmed.read_text())
    for _ in range(5):
        ran = container(hookenv, busybox_rootfs, runtime, LS, seccomp=profile, hook=False)
        assert ran.returncode == 0, ran.stderr


NOISE = "import os, sys\nprint('ready', flush=True)\nwhile True:\n    os.getpriority(os.PRIO_PROCESS, 0)\n"


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_nothing_from_outside_the_container_gets_in(
    hookenv: HookEnv, busybox_rootfs: Path, runtime: str
) -> None:
    """A host process calls getpriority in a loop for the whole recording; the workload never does."""
    require("root", "ebpf", runtime, "busybox")
    noise = subprocess.Popen([sys.executable, "-c", NOISE], stdout=subprocess.PIPE, text=True)
    try:
        assert noise.stdout is not None and noise.stdout.readline() == "ready\n"
        out = hookenv.root / "quiet.json"
        hookenv.configure(runtimeInit="keep")  # even the unanchored recording
        ran = container(hookenv, busybox_rootfs, runtime, ["/bin/sh", "-c", "ls / && sleep 0.2"],
                        annotations={KEY: f"of:{out}"})
        assert ran.returncode == 0, ran.stderr
        assert noise.poll() is None  # still calling getpriority after the container exited
    finally:
        noise.kill()
        noise.wait()
    meta = json.loads((hookenv.root / "quiet.meta.json").read_text())
    seen = {n for names in meta["syscalls"].values() for n in names}
    assert "getpriority" not in seen and "getpriority" not in profile_names(out)
    assert {"execve", "nanosleep"} & seen or {"execve", "clock_nanosleep"} & seen


def test_two_containers_at_once(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "runc", "crun", "busybox")
    jobs = {
        "a": ("runc", ["/bin/mkdir", "/tmp/a"]),
        "b": ("crun", ["/bin/ln", "-s", "/x", "/tmp/b"]),
    }
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    prepared = {}
    for key, (runtime, args) in jobs.items():
        annotations = {KEY: f"of:{hookenv.root}/{key}.json"}
        prepared[key] = prepare(hookenv, busybox_rootfs, runtime, args, annotations=annotations)

    def run(key: str) -> None:
        results[key] = run_prepared(jobs[key][0], *prepared[key])

    threads = [threading.Thread(target=run, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hookenv.wait_tracers()
    assert all(r.returncode == 0 for r in results.values()), results
    a, b = profile_names(hookenv.root / "a.json"), profile_names(hookenv.root / "b.json")
    assert {"mkdir", "mkdirat"} & a and not {"symlink", "symlinkat"} & a
    assert {"symlink", "symlinkat"} & b and not {"mkdir", "mkdirat"} & b
    ids = {json.loads((hookenv.root / f"{k}.meta.json").read_text())["containerID"] for k in jobs}
    assert len(ids) == 2


def wait_for_line(env: HookEnv, needle: str) -> str:
    """The first log line holding `needle`, once there (a hang guard, not a timing bound)."""
    for _ in range(WAIT_MS // 10):
        found = [line for line in env.lines() if needle in line]
        if found:
            return found[0]
        threading.Event().wait(0.01)
    pytest.fail(f"no log line with {needle!r} after {WAIT_MS / 1000:g} s: {env.lines()}")


def container_status(runtime: str, cid: str) -> str | None:
    shown = subprocess.run([runtime, "state", cid], capture_output=True, text=True, check=False)
    return str(json.loads(shown.stdout)["status"]) if shown.returncode == 0 else None


def wait_running(runtime: str, cid: str) -> None:
    for _ in range(WAIT_MS // 10):
        if container_status(runtime, cid) == "running":
            return
        threading.Event().wait(0.01)
    pytest.fail(f"container {cid} not running after {WAIT_MS / 1000:g} s")


def signal_mask(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_sigterm_stops_the_tracer(hookenv: HookEnv, busybox_rootfs: Path, runtime: str) -> None:
    """crun runs hooks with signals blocked; the tracer starts with none blocked, whatever the runtime,
    so a SIGTERM (node shutdown) stops it while the container runs, and nothing is written."""
    require("root", "ebpf", runtime, "busybox")
    out = hookenv.root / "stopped.json"
    cid, bundle = prepare(hookenv, busybox_rootfs, runtime, ["/bin/sleep", "3600"],
                          annotations={KEY: f"of:{out}"})
    results: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(target=lambda: results.append(run_prepared(runtime, cid, bundle)))
    runner.start()
    try:
        line = wait_for_line(hookenv, "tracer pid")
        tracer = int(re.findall(r"tracer pid (\d+)", line)[0])
        wait_running(runtime, cid)
        assert signal_mask(tracer) == 0
        fd = os.pidfd_open(tracer)
        try:
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        finally:
            os.close(fd)
        wait_pid(tracer)
        stopped = wait_for_line(hookenv, "the tracer was stopped")
        assert f"container {cid}" in stopped and "SIGTERM" in stopped and "nothing was written" in stopped
        assert container_status(runtime, cid) == "running"  # stopped while the container still ran
    finally:
        subprocess.run([runtime, "kill", cid, "KILL"], capture_output=True, check=False)
        runner.join()
    assert hookenv.written() == []
    assert "Traceback" not in "".join(hookenv.lines())


def test_sigterm_during_the_write(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    """A SIGTERM once the container has exited (here: while the tracer waits for another writer of
    the directory) is held until the dump is whole; the log has one line for it with the container
    id, and no traceback."""
    require("root", "ebpf", "runc", "busybox")
    out = hookenv.root / "held.json"
    squatter = os.open(hookenv.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(squatter, fcntl.LOCK_EX)  # the tracer's write waits for this
        cid, bundle = prepare(hookenv, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{out}"})
        assert run_prepared("runc", cid, bundle).returncode == 0
        wait_for_line(hookenv, "waiting for another writer")
        for pid in hookenv.tracer_pids():
            fd = os.pidfd_open(pid)
            try:
                signal.pidfd_send_signal(fd, signal.SIGTERM)
            finally:
                os.close(fd)
    finally:
        os.close(squatter)
    hookenv.wait_tracers()
    lines = hookenv.lines()
    assert "Traceback" not in "\n".join(lines)
    assert all(line.startswith("20") and f"container {cid}" in line for line in lines), lines
    done = lines[-1]
    assert f"wrote {out}" in done and "SIGTERM" in done, lines
    meta = json.loads((hookenv.root / "held.meta.json").read_text())
    assert meta["profileSHA256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    pytest.fail(f"no {controller} hierarchy in /proc/self/cgroup")


def tracer_cgroups(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {c or "unified": p for _, c, p in (line.split(":", 2) for line in lines)}


@pytest.fixture
def tracer_cgroup() -> Iterator[str]:
    """A cgroup path for the tracer, below this test's own memory cgroup (so that its memory stays
    counted inside whatever limits this run); every directory the tracer makes is removed after."""
    from syscribe.hooks import cgroup

    target = f"{own_cgroup('memory').rstrip('/')}/syscribe-test-{uuid.uuid4().hex[:8]}"
    hierarchies = cgroup.parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    mounts = cgroup.mount_points(Path("/proc/self/mountinfo").read_text())
    points = {m for h in hierarchies if (m := cgroup.mount_of(h, mounts)) is not None}
    # Only the target and its ancestors, in each hierarchy: other runs make cgroups meanwhile.
    parts = target.strip("/").split("/")
    chain = [f"{m}/{'/'.join(parts[:n])}" for m in points for n in range(1, len(parts) + 1)]
    existed = {d for d in chain if os.path.isdir(d)}
    try:
        yield target
    finally:
        for directory in sorted(set(chain) - existed, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def test_the_tracer_moves_into_its_own_cgroup(
    hookenv: HookEnv, busybox_rootfs: Path, tracer_cgroup: str
) -> None:
    """Out of the runtime's cgroup (the pod's, under CRI-O), into tracerCgroup in every hierarchy:
    its memory is counted there."""
    require("root", "ebpf", "runc", "busybox")
    hookenv.configure(tracerCgroup=tracer_cgroup)
    out = hookenv.root / "moved.json"
    cid, bundle = prepare(hookenv, busybox_rootfs, "runc", ["/bin/sleep", "3600"],
                          annotations={KEY: f"of:{out}"})
    runner = threading.Thread(target=run_prepared, args=("runc", cid, bundle))
    runner.start()
    try:
        line = wait_for_line(hookenv, "tracer pid")
        tracer = int(re.findall(r"tracer pid (\d+)", line)[0])
        wait_running("runc", cid)
        placed = tracer_cgroups(tracer)
        assert placed and set(placed.values()) == {tracer_cgroup}, placed
        usage = Path(f"/sys/fs/cgroup/memory{tracer_cgroup}/memory.usage_in_bytes").read_text()
        assert int(usage) > 1 << 20  # the tracer's memory is counted there
    finally:
        subprocess.run(["runc", "kill", cid, "KILL"], capture_output=True, check=False)
        runner.join()
    hookenv.wait_tracers()
    meta = json.loads((hookenv.root / "moved.meta.json").read_text())
    assert not [w for w in meta["warnings"] if "cgroup" in w], meta["warnings"]


def test_a_cgroup_the_tracer_cannot_join_is_a_warning(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "runc", "busybox")
    hookenv.configure(tracerCgroup="/cgroup.procs/tracer")  # below a file: made nowhere
    out = hookenv.root / "stayed.json"
    assert container(hookenv, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{out}"}).returncode == 0
    meta = json.loads((hookenv.root / "stayed.meta.json").read_text())
    assert any("stayed in the runtime's cgroup" in w and "Not a directory" in w for w in meta["warnings"])
    assert "stayed in the runtime's cgroup" in hookenv.lines()[-1]


def test_bad_annotation_fails_the_start_or_not_as_configured(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "runc", "busybox")
    bad = {KEY: "of:relative/p.json"}
    refused = container(hookenv, busybox_rootfs, "runc", LS, annotations=bad)
    assert refused.returncode != 0
    assert "relative; give an absolute path" in refused.stderr
    hookenv.configure(onFailure="start")
    started = container(hookenv, busybox_rootfs, "runc", LS, annotations=bad)
    assert started.returncode == 0 and "bin" in started.stdout
    assert hookenv.written() == []
    lines = hookenv.lines()
    assert len(lines) == 2 and all("relative" in line for line in lines)
    assert "not started (onFailure: fail)" in lines[0] and "starts unrecorded" in lines[1]


def test_symlink_in_the_output_path_fails_the_start(
    hookenv: HookEnv, busybox_rootfs: Path, tmp_path: Path
) -> None:
    require("root", "runc", "busybox")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (hookenv.root / "team").symlink_to(elsewhere)
    bad = {KEY: f"of:{hookenv.root}/team/p.json"}
    refused = container(hookenv, busybox_rootfs, "runc", LS, annotations=bad)
    assert refused.returncode != 0
    assert "symlink" in refused.stderr
    assert list(elsewhere.iterdir()) == []


def test_tracer_too_slow_lets_the_container_start_unrecorded(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    """The hook gives up at its timeout: the container starts (and here exits) before the tracer is
    attached, and the tracer, stopped by the hook, writes nothing."""
    require("root", "ebpf", "runc", "busybox")
    hookenv.configure(timeoutSeconds=0.001, onFailure="start")
    ran = container(hookenv, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{hookenv.root}/p.json"})
    assert ran.returncode == 0 and "bin" in ran.stdout
    lines = hookenv.lines()
    assert len(lines) == 1 and "did not attach within 0.001 s" in lines[0], lines
    for pid in map(int, re.findall(r"tracer \(pid (\d+)\)", lines[0])):
        wait_pid(pid)
    assert hookenv.written() == []


def test_crio_pod_annotations_pick_the_right_containers(hookenv: HookEnv, busybox_rootfs: Path) -> None:
    """A pod as CRI-O hands it to the runtime: every container carries the pod's annotations, the
    sandbox is marked, the per-container key wins, the pod-wide key skips the sandbox."""
    require("root", "ebpf", "runc", "busybox")
    pod = {
        KEY: f"of:{hookenv.root}/shop/web-pod.json",
        f"{KEY}/nginx": f"of:{hookenv.root}/shop/web-nginx.json",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": "0b6e7c1e-8f3a-4f8e-9a57-3d2f5e1c0a11",
    }
    sandbox_id = f"syscribe-hook-sandbox-{uuid.uuid4().hex[:8]}"
    members = {
        "POD": {**pod, "io.kubernetes.cri-o.ContainerType": "sandbox", "io.kubernetes.container.name": "POD",
                "io.kubernetes.cri-o.SandboxID": sandbox_id},
        "nginx": {**pod, "io.kubernetes.cri-o.ContainerType": "container",
                  "io.kubernetes.container.name": "nginx", "io.kubernetes.cri-o.SandboxID": sandbox_id},
        "sidecar": {**pod, "io.kubernetes.cri-o.ContainerType": "container",
                    "io.kubernetes.container.name": "sidecar", "io.kubernetes.cri-o.SandboxID": sandbox_id},
    }
    for name, labels in members.items():
        cid, bundle = prepare(hookenv, busybox_rootfs, "runc", LS, annotations=labels)
        if name == "POD":
            cid = sandbox_id
        assert run_prepared("runc", cid, bundle).returncode == 0, hookenv.lines()
        hookenv.wait_tracers()
    assert hookenv.written() == [
        "shop/web-nginx.json", "shop/web-nginx.meta.json", "shop/web-pod.json", "shop/web-pod.meta.json",
    ]
    nginx = json.loads((hookenv.root / "shop" / "web-nginx.meta.json").read_text())
    sidecar = json.loads((hookenv.root / "shop" / "web-pod.meta.json").read_text())
    assert (nginx["container"], nginx["pod"], nginx["namespace"]) == ("nginx", "web", "shop")
    assert nginx["annotation"] == f"{KEY}/nginx"
    assert (sidecar["container"], sidecar["annotation"]) == ("sidecar", KEY)
    assert len([line for line in hookenv.lines() if "wrote" in line]) == 2
