"""The resident recorder for real: `syscribe recorder` serving the hook's socket, containers run by
runc, crun and podman handed over to it, profiles enforced; a restart in the middle of a recording;
the socket's refusals (a non-root peer, a path outside the roots, a host process, a flood).

Sync points, no sleeps: the recorder prints a line once it listens; stopping it (SIGTERM, then wait)
writes every container that has exited, so after `stop()` the profiles are on disk."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syscribe.bundle import make_bundle
from syscribe.hooks import handover
from syscribe.hooks.annotation import KEY
from syscribe.recorder.resident import ResidentProgram
from tests.support.prereq import require
from tests.test_hook_real import (
    HOOK,
    HOOKS_D,
    LS,
    MKDIR,
    PODMAN,
    PODMAN_RUN,
    HookEnv,
    container,
    denied,
    new_env,
    prepare,
    profile_names,
    run_prepared,
)

pytestmark = pytest.mark.real
SYSCRIBE = Path(sys.executable).parent / "syscribe"


class Recorder:
    """A `syscribe recorder` process with its own socket, pins and state directory."""

    def __init__(self, env: HookEnv, *args: str) -> None:
        self.env = env
        self.socket = str(env.tmp / "rec.sock")
        self.pin_dir = f"/sys/fs/bpf/syscribe-test-{uuid.uuid4().hex[:10]}"
        self.state_dir = env.tmp / "state"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.banner = ""

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [str(SYSCRIBE), "recorder", "--config", str(self.env.config_path), "--socket", self.socket,
             "--pin-dir", self.pin_dir, "--state-dir", str(self.state_dir), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        said = []
        while line := self.proc.stderr.readline().decode():  # log lines may come first
            said.append(line)
            if "listening at" in line:
                self.banner = line
                return
        pytest.fail("the recorder exited: " + "".join(said))

    def stop(self) -> int:
        assert self.proc is not None and self.proc.stderr is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self.proc.stderr.close()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None
        ResidentProgram(self.pin_dir).unload()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[HookEnv]:
    hookenv = new_env(tmp_path)
    hookenv.configure(recorderSocket=str(tmp_path / "rec.sock"))
    yield hookenv


@pytest.fixture
def recorder(env: HookEnv) -> Iterator[Recorder]:
    require("root", "ebpf", "libseccomp")
    rec = Recorder(env)
    rec.start()
    try:
        yield rec
    finally:
        rec.kill()


def meta_of(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.with_name(path.stem + ".meta.json").read_text())
    return doc


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_record_then_enforce_through_the_resident_recorder(
    env: HookEnv, recorder: Recorder, busybox_rootfs: Path, runtime: str
) -> None:
    require(runtime, "busybox")
    out = env.root / runtime / "ls.json"
    ran = container(env, busybox_rootfs, runtime, LS, annotations={KEY: f"of:{out}"})
    assert ran.returncode == 0, ran.stderr
    assert recorder.stop() == 0
    assert env.written() == [f"{runtime}/ls.json", f"{runtime}/ls.meta.json"], env.lines()
    assert any("resident recorder, slot" in line and "handed over" in line for line in env.lines())
    assert not env.tracer_pids()  # no per-container tracer
    meta = meta_of(out)
    assert meta["recorder"] == "resident" and meta["partial"] is False
    assert meta["runtime"] == runtime and meta["runtimeInit"]["anchorSeen"] is True
    assert "pivot_root" in meta["runtimeInit"]["excluded"]
    names = profile_names(out)
    assert {"execve", "getdents64"} <= names and not {"mkdir", "mkdirat", "pivot_root"} & names
    profile = json.loads(out.read_text())
    again = container(env, busybox_rootfs, runtime, LS, seccomp=profile, hook=False)
    assert again.returncode == 0, again.stderr
    assert denied(container(env, busybox_rootfs, runtime, MKDIR, seccomp=profile, hook=False))
    # Nothing left behind: no state, and the idle program unloaded at stop.
    assert not list(recorder.state_dir.iterdir()) and not os.path.exists(recorder.pin_dir)


def test_two_concurrent_containers_stay_apart(env: HookEnv, recorder: Recorder, busybox_rootfs: Path) -> None:
    require("runc", "crun", "busybox")
    # The rootfs is shared by the session's tests: paths no other test creates.
    tag = uuid.uuid4().hex[:8]
    jobs = {"a": ("runc", ["/bin/mkdir", f"/tmp/a-{tag}"]),
            "b": ("crun", ["/bin/ln", "-s", "/x", f"/tmp/b-{tag}"])}
    prepared = {k: prepare(env, busybox_rootfs, rt, args, annotations={KEY: f"of:{env.root}/{k}.json"})
                for k, (rt, args) in jobs.items()}
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(key: str) -> None:
        results[key] = run_prepared(jobs[key][0], *prepared[key])

    threads = [threading.Thread(target=run, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results.values()), results
    recorder.stop()
    a, b = profile_names(env.root / "a.json"), profile_names(env.root / "b.json")
    assert {"mkdir", "mkdirat"} & a and not {"symlink", "symlinkat"} & a
    assert {"symlink", "symlinkat"} & b and not {"mkdir", "mkdirat"} & b


def _waiting_container(
    env: HookEnv, rootfs: Path, out: Path, script: str
) -> tuple[subprocess.Popen[bytes], str]:
    """A runc container that says `ready`, waits for a line on stdin, then runs `script`."""
    cid = f"syscribe-rec-{uuid.uuid4().hex[:12]}"
    bundle = env.tmp / f"bundle-{cid}"
    make_bundle(bundle, rootfs, ["/bin/sh", "-c", f"echo ready; read go; {script}"],
                annotations={KEY: f"of:{out}"}, prestart=[env.entry()], runtime="runc")
    proc = subprocess.Popen(["runc", "run", "--bundle", str(bundle), cid], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"ready\n", line + (proc.stderr.read() if proc.stderr else b"")
    return proc, cid


def _release(proc: subprocess.Popen[bytes], cid: str) -> None:
    proc.communicate(b"go\n", timeout=120)
    subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)


def test_a_restart_mid_recording_loses_nothing(
    env: HookEnv, recorder: Recorder, busybox_rootfs: Path
) -> None:
    require("runc", "busybox")
    out = env.root / "restart.json"
    script = f"mkdir /tmp/after-restart-{uuid.uuid4().hex[:8]}"
    proc, cid = _waiting_container(env, busybox_rootfs, out, script)
    try:
        # Stopped while the container runs: what it has so far is written, marked partial, and the
        # recording stays pinned.
        assert recorder.stop() == 0
        partial = meta_of(out)
        assert partial["partial"] is True and partial["recorder"] == "resident"
        assert "mkdir" not in profile_names(out)
        assert [p.name for p in recorder.state_dir.iterdir()] == ["0.json"]
        recorder.start()
        assert "1 recordings picked up" in recorder.banner
    finally:
        _release(proc, cid)
    recorder.stop()
    final = meta_of(out)
    assert final["partial"] is False, final
    names = profile_names(out)
    assert {"mkdir", "execve"} <= names | {"mkdirat"} and {"mkdir", "mkdirat"} & names
    assert final["runtimeInit"]["anchorSeen"] is True and "pivot_root" in final["runtimeInit"]["excluded"]
    assert any("picked up the recording in slot 0" in line for line in env.lines())


def test_a_container_that_ends_while_no_recorder_runs_is_written_at_the_next_start(
    env: HookEnv, recorder: Recorder, busybox_rootfs: Path
) -> None:
    require("runc", "busybox")
    out = env.root / "gap.json"
    proc, cid = _waiting_container(env, busybox_rootfs, out, f"mkdir /tmp/in-the-gap-{uuid.uuid4().hex[:8]}")
    recorder.stop()
    _release(proc, cid)  # ends while nothing listens; the pinned program still counted
    recorder.start()
    recorder.stop()
    meta = meta_of(out)
    assert meta["partial"] is False and meta.get("recovered") is True
    assert {"mkdir", "mkdirat"} & profile_names(out)


def test_no_free_slot_refuses_the_recording(env: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "runc", "busybox")
    rec = Recorder(env, "--slots", "1")
    rec.start()
    try:
        proc, cid = _waiting_container(env, busybox_rootfs, env.root / "first.json", "true")
        try:
            second = container(env, busybox_rootfs, "runc", LS,
                               annotations={KEY: f"of:{env.root}/second.json"})
            assert second.returncode != 0  # onFailure: fail
            assert any("all 1 recording slots are in use" in line for line in env.lines()), env.lines()
        finally:
            _release(proc, cid)
    finally:
        rec.kill()


def test_podman_hands_over_through_hooks_d(env: HookEnv, recorder: Recorder, busybox_rootfs: Path) -> None:
    require("podman", "busybox")
    hooks_dir = env.tmp / "hooks.d"
    hooks_dir.mkdir()
    doc = json.loads(HOOKS_D.read_text())
    doc["hook"]["path"] = str(HOOK)
    doc["hook"]["args"] = ["syscribe-hook", "--config", str(env.config_path)]
    (hooks_dir / "syscribe-hook.json").write_text(json.dumps(doc))
    out = env.root / "podman.json"
    ran = subprocess.run(
        [*PODMAN, "--hooks-dir", str(hooks_dir), "run", "--rm", *PODMAN_RUN, "--annotation",
         f"{KEY}=of:{out}", "--rootfs", str(busybox_rootfs), *LS],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert ran.returncode == 0, ran.stderr
    recorder.stop()
    assert meta_of(out)["recorder"] == "resident"
    enforced = subprocess.run(
        [*PODMAN, "run", "--rm", *PODMAN_RUN, "--security-opt", f"seccomp={out}", "--rootfs",
         str(busybox_rootfs), *LS], capture_output=True, text=True, timeout=120, check=False,
    )
    assert enforced.returncode == 0, enforced.stderr


def test_without_a_recorder_the_hook_falls_back_to_its_tracer(env: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "runc", "busybox")
    out = env.root / "fallback.json"
    ran = container(env, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{out}"})  # nothing listens
    assert ran.returncode == 0, ran.stderr
    assert env.tracer_pids() and out.exists()
    assert "recorder" not in meta_of(out)


# -- the socket's refusals --------------------------------------------------------------------------
def ask(path: str, data: bytes, fds: list[int]) -> str:
    """Send one request as the hook does; the recorder's answer (refusal text, or "ok")."""
    answer = handover.hand_over(path, data, fds, 60)
    assert isinstance(answer, handover.Answer), answer
    return "ok" if answer.ok else answer.message


def request(pid: int, of: str) -> bytes:
    state = {"ociVersion": "1.0.2", "id": "probe", "status": "creating", "pid": pid, "bundle": "/b"}
    return handover.request_bytes(state, {KEY: f"of:{of}"}, KEY, "runc", 0.0)


@pytest.fixture
def namespaced() -> Iterator[subprocess.Popen[bytes]]:
    """A process in a mount namespace of its own (a stand-in for a container)."""
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", "echo ready; read x"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()


def test_socket_refuses_paths_outside_its_roots_and_host_processes(
    env: HookEnv, recorder: Recorder, namespaced: subprocess.Popen[bytes]
) -> None:
    pidfd = os.pidfd_open(namespaced.pid)
    own = os.pidfd_open(os.getpid())
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        outside = ask(recorder.socket, request(namespaced.pid, "/etc/cron.d/x.json"), [pidfd])
        assert "not under an allowed directory" in outside and str(env.root) in outside
        host = ask(recorder.socket, request(os.getpid(), f"{env.root}/h.json"), [own])
        assert "host's mount namespace" in host
        assert "not a pidfd" in ask(recorder.socket, request(namespaced.pid, f"{env.root}/n.json"), [null])
        wrong = ask(recorder.socket, request(namespaced.pid + 1, f"{env.root}/w.json"), [pidfd])
        assert "the pidfd is of process" in wrong
        assert "exactly one pidfd" in ask(recorder.socket, request(namespaced.pid, f"{env.root}/z.json"), [])
        assert "not a JSON object" in ask(recorder.socket, b"\xff{", [pidfd])
        assert "unknown request" in ask(recorder.socket, b'{"v": 9}', [pidfd])
        assert "larger than" in ask(recorder.socket, b" " * (handover.MAX_MESSAGE + 10), [pidfd])
        # The same request with a good path is taken: the checks above were the reasons.
        assert ask(recorder.socket, request(namespaced.pid, f"{env.root}/good.json"), [pidfd]) == "ok"
    finally:
        for fd in (pidfd, own, null):
            os.close(fd)
    assert not (env.root / "h.json").exists()
    assert recorder.proc is not None and recorder.proc.poll() is None


def test_socket_is_root_only_and_refuses_a_non_root_peer(
    env: HookEnv, namespaced: subprocess.Popen[bytes]
) -> None:
    require("root", "ebpf", "libseccomp")
    # A socket directory others may traverse (tmp_path's parents are 0700), so that only the socket's
    # own mode and the recorder's SO_PEERCRED check stand in a non-root peer's way.
    sock_dir = Path(tempfile.mkdtemp(prefix="syscribe-sock-"))
    sock_dir.chmod(0o755)
    recorder = Recorder(env)
    recorder.socket = str(sock_dir / "rec.sock")
    try:
        recorder.start()
        _non_root_refused(env, recorder, namespaced)
    finally:
        recorder.kill()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _non_root_refused(env: HookEnv, recorder: Recorder, namespaced: subprocess.Popen[bytes]) -> None:
    assert os.stat(recorder.socket).st_mode & 0o777 == 0o600

    def as_nobody() -> str:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                said = ask(recorder.socket, request(namespaced.pid, f"{env.root}/n.json"), [])
                os.write(w, said.encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            said = f.read().decode()
        os.waitpid(pid, 0)
        return said

    assert "Permission denied" in as_nobody()  # the file mode keeps others out
    os.chmod(recorder.socket, 0o666)  # and should it be loosened, SO_PEERCRED still does
    assert "uid 65534" in as_nobody() and "only root" in as_nobody()


def test_a_flood_is_refused_clearly_and_the_recorder_stays_up(env: HookEnv, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "libseccomp")
    rec = Recorder(env, "--max-pending", "4", "--read-seconds", "60")
    rec.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(10):  # connections that never send: four may wait, the rest are refused
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(rec.socket)
            idle.append(s)
        answered: dict[int, str] = {}
        poller = select.poll()
        for s in idle:
            poller.register(s, select.POLLIN)
        while len(answered) < 6:
            ready = poller.poll(60_000)
            assert ready, f"only {len(answered)} refusals"
            for fd, _ in ready:
                s = next(x for x in idle if x.fileno() == fd)
                answered[fd] = handover.parse_answer(s.recv(handover.MAX_MESSAGE)).message
                poller.unregister(fd)
        assert all("busy (4 requests waiting)" in m for m in answered.values()), answered
        for s in idle:
            s.close()
        idle.clear()
        # A burst of garbage: every request is answered (refused as garbage, or as busy while the
        # recorder still counts the closed ones), none kills the loop.
        for _ in range(200):
            said = ask(rec.socket, b"garbage", [])
            assert "not a JSON object" in said or "busy" in said, said
        out = env.root / "after-flood.json"
        ran = container(env, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{out}"})
        assert ran.returncode == 0, ran.stderr
        assert rec.stop() == 0
        assert meta_of(out)["recorder"] == "resident"
    finally:
        for s in idle:
            s.close()
        rec.kill()


def test_the_service_runs_in_a_thread_of_its_host(env: HookEnv, busybox_rootfs: Path) -> None:
    """What the node agent does: RecorderService.start() serves from a thread, stop() writes and ends."""
    require("root", "ebpf", "libseccomp", "runc", "busybox")
    from syscribe.hooks.config import load_config
    from syscribe.recorder.service import RecorderService

    pin_dir = f"/sys/fs/bpf/syscribe-test-{uuid.uuid4().hex[:10]}"
    service = RecorderService(load_config(str(env.config_path), required=True), pin_dir=pin_dir,
                              state_dir=str(env.tmp / "state"))
    try:
        service.start()
        out = env.root / "threaded.json"
        ran = container(env, busybox_rootfs, "runc", LS, annotations={KEY: f"of:{out}"})
        assert ran.returncode == 0, ran.stderr
    finally:
        service.stop()
        ResidentProgram(pin_dir).unload()
    assert meta_of(out)["recorder"] == "resident" and "getdents64" in profile_names(out)
    assert not os.path.exists(service.socket_path) and not os.path.exists(pin_dir)
