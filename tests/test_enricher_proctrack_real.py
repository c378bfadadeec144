"""The process tracker on this machine: the kernel's process events connector, real processes, and a
runc container whose short-lived child is killed by its seccomp profile.

The proof the tracker is there for: a child that makes one syscall its profile kills is gone (and
reaped, and its container deleted) before the enricher reads its record. The record is real (taken from
the audit netlink group as the kernel sent it) and reaches the enricher through the file it follows
only then, as auditd's log does when the enricher lags. With the tracker its line names pod,
namespace and container; without it, the same line has none (the control, in the same test).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from syscribe.enricher.containers import ContainerResolver
from syscribe.enricher.proctrack import (
    CN_IDX_PROC,
    CN_VAL_PROC,
    NETLINK_CONNECTOR,
    ProcessTracker,
)
from tests.support import kubebundle, unprivileged
from tests.support.kubebundle import crio_like_bundle, run_detached
from tests.support.prereq import require

pytestmark = pytest.mark.real

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")
PYTHON = sys.executable
ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
KILL_SYNC: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ARCHES,
    "syscalls": [{"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"}],
}
NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
AUDIT_SECCOMP = 1326
SO_RCVBUFFORCE = 33


def wait_until(ready: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


# --- helpers shared with test_enricher_kube_e2e.py ------------------------------------------------------


class AuditTap:
    """Every audit record the kernel multicasts (NETLINK_AUDIT group 1), as auditd's raw log lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, bytes]] = []  # (type, "type=... msg=audit(...): ..." line)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        # The group carries every record on the machine (other tests log every syscall of their
        # containers): with the default buffer the one record a test waits for could be dropped.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self._sock.bind((0, AUDIT_NLGRP_READLOG))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                continue  # ENOBUFS: dropped records are gone (the 8 MiB buffer makes it unlikely)
            if len(data) < 16:
                continue
            _length, mtype = struct.unpack_from("=IH", data)
            text = data[16:].rstrip(b"\0\n")
            name = b"SECCOMP" if mtype == AUDIT_SECCOMP else b"UNKNOWN[%d]" % mtype
            with self._lock:
                self.lines.append((mtype, b"type=" + name + b" msg=" + text + b"\n"))

    def seccomp(self, match: Callable[[bytes], bool]) -> list[bytes]:
        with self._lock:
            return [line for mtype, line in self.lines if mtype == AUDIT_SECCOMP and match(line)]

    def __enter__(self) -> AuditTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def field(line: bytes, name: str) -> str:
    for part in line.split():
        if part.startswith(name.encode() + b"="):
            return part.split(b"=", 1)[1].decode()
    raise AssertionError(f"no {name}= in {line!r}")


class EnricherRun:
    def __init__(self, process: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.process, self.out, self.err = process, out, err

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        data = self.out.read_bytes()
        return [orjson.loads(line) for line in data.splitlines()[: data.count(b"\n")]]

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if match(record):
                    return record
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no matching line within {timeout} s; enricher rc={self.process.poll()}, "
            f"stderr: {self.stderr()[-2000:]!r}"
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


@contextlib.contextmanager
def run_enricher(tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()) -> Iterator[EnricherRun]:
    """`syscribe enrich ARGS` writing to a file, once it is reading (its metrics textfile exists)."""
    tag = secrets.token_hex(3)
    out, err = tmp_path / f"enriched-{tag}.json", tmp_path / f"enrich-{tag}.err"
    ready = tmp_path / f"m-{tag}.prom"
    cmd = [*prefix, SYSCRIBE, "enrich", *args, "--output", str(out), "--metrics-textfile", str(ready),
           "--hold-seconds", "0.1"]
    with open(err, "wb") as err_fh:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_fh)
    run = EnricherRun(process, out, err)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"enricher not ready (rc={process.poll()}): {run.stderr()[-2000:]}")
            time.sleep(0.05)
        yield run
    finally:
        run.stop()


# --- the connector itself ------------------------------------------------------------------------------


class Recorder:
    """A sink that writes down what the tracker tells it (and can be made slow)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.tracked: list[tuple[int, int | None]] = []
        self.ended: list[int] = []

    def track(self, pid: int, parent: int | None = None, at_ns: int | None = None) -> bool:
        if self.delay:
            time.sleep(self.delay)
        self.tracked.append((pid, parent))
        return False

    def exited(self, pid: int, when: float | None = None) -> None:
        self.ended.append(pid)

    def expire(self, now: float | None = None) -> int:
        return 0


def test_tracker_hears_fork_exec_and_exit() -> None:
    require("root")
    sink = Recorder()
    with ProcessTracker(sink) as tracker:
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        wait_until(lambda: child.pid in sink.ended, "the child's exit")
    assert (child.pid, os.getpid()) in sink.tracked  # the fork, with its parent
    assert (child.pid, None) in sink.tracked  # the exec
    assert tracker.stats.forks >= 1 and tracker.stats.execs >= 1 and tracker.stats.exits >= 1
    assert tracker.stats.overruns == 0 and tracker.stats.malformed == 0 and not tracker.running


def test_overrun_is_counted_reported_and_survived() -> None:
    """A fork storm into a tiny socket buffer read by a slow sink: the kernel drops events (ENOBUFS);
    the tracker counts and reports it, subscribes again, and goes on hearing new processes."""
    require("root")
    sink = Recorder(delay=0.002)
    reports: list[tuple[str, str]] = []
    started: set[int] = set()
    since: list[int] = []

    def storm_until_overrun() -> bool:
        # Another storm while none overran yet: a loaded machine may slow the storm below the reader.
        if not tracker.stats.overruns:
            subprocess.run(["sh", "-c", "for i in $(seq 300); do /bin/true; done"], check=True, timeout=120)
        return tracker.stats.overruns > 0

    def one_more_heard() -> bool:
        # The 4 KiB buffer can still be full (of the storm's events, or of any other process on the
        # machine: the connector is node-wide), and then the kernel rightly drops the next process's
        # events too. What the tracker promises is that it goes on hearing, not that it hears a given
        # one: start processes until the exit of one of them is heard (bounded by wait_until).
        if not started:
            since.append(len(sink.ended))  # exits before this one are not of our processes
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        started.add(child.pid)
        return not started.isdisjoint(sink.ended[since[0]:])

    with ProcessTracker(sink, rcvbuf=4096, report=lambda code, text: reports.append((code, text))) as tracker:
        wait_until(storm_until_overrun, "an overrun", timeout=300)
        sink.delay = 0.0
        wait_until(one_more_heard, "a process started after the overruns")
        assert tracker.running
    assert tracker.stats.resubscribed == tracker.stats.overruns > 0
    assert reports and {code for code, _text in reports} == {"proctrack_overrun"}
    assert all("\n" not in text and "resubscribed" in text for _code, text in reports)


def test_datagrams_not_from_the_kernel_are_ignored() -> None:
    require("root")
    sink = Recorder()
    with ProcessTracker(sink) as tracker:
        forged_fork = struct.pack("=IIQiiii", 1, 0, time.monotonic_ns(), 1, 1, 31337, 31337)
        cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(forged_fork), 0) + forged_fork
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as forger:
            forger.bind((0, 0))
            forger.sendto(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn, (tracker.port, 0))
        wait_until(lambda: tracker.stats.foreign == 1, "the forged datagram")
    assert (31337, 1) not in sink.tracked


def _start_tracker_elsewhere(prefix: list[str], python: str = PYTHON) -> subprocess.CompletedProcess[str]:
    code = (
        "from syscribe.enricher.proctrack import ProcessTracker, TrackerUnavailableError\n"
        "class S:\n"
        "    def track(self, pid, parent=None, at_ns=None): return False\n"
        "    def exited(self, pid, when=None): pass\n"
        "    def expire(self, now=None): return 0\n"
        "try:\n"
        "    ProcessTracker(S()).start()\n"
        "    print('started')\n"
        "except TrackerUnavailableError as exc:\n"
        "    print('unavailable:', exc)\n"
    )
    return subprocess.run(
        [*prefix, python, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd="/"
    )


def test_outside_the_hosts_namespaces_the_kernel_does_not_answer() -> None:
    require("root")
    for prefix in (["unshare", "--user", "--map-root-user"], ["unshare", "--pid", "--fork"],
                   ["unshare", "--net"]):
        done = _start_tracker_elsewhere(prefix)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("unavailable: the kernel's process events connector did not answer")
        assert "hostPID" in done.stdout and "Traceback" not in done.stderr


def test_without_root_it_works_or_says_what_to_do() -> None:
    """Since Linux 6.6 any user may listen; before, binding needs CAP_NET_ADMIN. Either way, one line."""
    require("root")
    # A copy nobody can reach: the checkout itself may be closed to other users.
    done = _start_tracker_elsewhere(unprivileged.NOBODY, str(unprivileged.reachable().python))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "started" or (
        done.stdout.startswith("unavailable:") and "root" in done.stdout and done.stdout.count("\n") == 1
    ), done.stdout


# --- the enricher with and without it -----------------------------------------------------------------------


@pytest.fixture
def real(busybox_rootfs: Path) -> Path:
    require("root", "runc", "busybox")
    return busybox_rootfs


@pytest.mark.parametrize("track", [True, False], ids=["tracker", "no-tracker"])
def test_a_child_killed_by_seccomp_and_gone_is_named_only_with_the_tracker(
    real: Path, tmp_path: Path, track: bool
) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    kb = crio_like_bundle(pod=f"job-{secrets.token_hex(3)}", namespace="batch", container="worker")
    tag = kb.container_id[:12]
    go, done = real / "tmp" / f"go-{tag}", real / "tmp" / f"done-{tag}"
    # The container's init waits, then runs a child (fork + exec of /bin/sync) that its profile kills,
    # reaps it, and says so.
    script = (
        f"while [ ! -e /tmp/go-{tag} ]; do sleep 0.05; done; /bin/sync; touch /tmp/done-{tag}; sleep 1000"
    )
    bundle = kb.write(tmp_path / "bundle", real, ["sh", "-c", script], seccomp=KILL_SYNC)
    flag = "--track-processes" if track else "--no-track-processes"
    with (
        AuditTap() as tap,
        run_enricher(tmp_path, "--source", "auditd", "--input", str(log), "--start", "beginning", flag) as e,
    ):
        try:
            init = run_detached(bundle, kb.container_id)
            go.touch()
            wait_until(done.exists, "the killed child reaped")
            killed = wait_until(
                lambda: tap.seccomp(lambda line: b" syscall=162 " in line and b'comm="sync"' in line
                                    and f" pid={init} ".encode() not in line),
                "the kill record",
            )
        finally:
            kubebundle.stop(kb)
            go.unlink(missing_ok=True)
            done.unlink(missing_ok=True)
        pid = int(field(killed[0], "pid"))
        assert pid != init and not Path(f"/proc/{pid}").exists()
        # Only now, child and container gone, does its record reach the enricher.
        with open(log, "ab") as fh:
            fh.write(killed[0])
        line = e.wait_for(lambda r: r["pid"] == pid)
        assert e.stop() == 0
    assert (line["syscallName"], line["action"], line["comm"]) == ("sync", "kill_process", "sync")
    names = (line["namespace"], line["pod"], line["container"], line["containerID"], line["podUID"])
    if track:
        assert names == ("batch", kb.pod, "worker", kb.container_id, kb.pod_uid), line
        assert "process tracker:" in e.stderr() and "container processes remembered" in e.stderr()
    else:
        assert names == (None, None, None, None, None), line


def test_enricher_goes_on_without_the_tracker_where_the_kernel_does_not_answer(tmp_path: Path) -> None:
    require("root")
    log = tmp_path / "audit.log"
    log.write_bytes(
        b'type=SECCOMP msg=audit(1700000000.123:77): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=4000123 '
        b'comm="x" exe="/bin/x" sig=0 arch=c000003e syscall=83 compat=0 ip=0x1 code=0x7ffc0000\n'
    )
    prefix = ("unshare", "--user", "--map-root-user")
    # The default (following): on if it can be; here it cannot, and says so once.
    with run_enricher(tmp_path, "--source", "auditd", "--input", str(log), "--start", "beginning",
                      prefix=prefix) as e:
        e.wait_for(lambda r: r["auditID"] == "1700000000.123:77")
        assert e.stop() == 0
    off = [line for line in e.stderr().splitlines() if "process tracking off" in line]
    assert len(off) == 1 and "hostPID" in off[0] and "--no-track-processes hides this" in off[0], e.stderr()
    assert "Traceback" not in e.stderr()
    # Asked for explicitly: the same, and the lines still come.
    out = tmp_path / "explicit.json"
    explicit = subprocess.run(
        [*prefix, SYSCRIBE, "enrich", "--source", "auditd", "--input", str(log), "--no-follow",
         "--track-processes", "--output", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert explicit.returncode == 0, explicit.stderr
    assert "process tracking off" in explicit.stderr and "hides this" not in explicit.stderr
    assert orjson.loads(out.read_bytes().splitlines()[0])["auditID"] == "1700000000.123:77"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_resolver_fed_by_the_tracker_knows_a_container_child_after_it_is_gone(
    real: Path, tmp_path: Path
) -> None:
    """The same without the enricher around it: the resolver's own answer, and its counters."""
    kb = crio_like_bundle()
    bundle = kb.write(tmp_path / "bundle", real, ["sleep", "1000"])
    resolver = ContainerResolver()
    # The exec'd child ends when told to, not after a fixed time: a `sleep 2` could be gone before
    # `runc ps` looks on a loaded machine.
    go = real / "tmp" / f"go-{kb.container_id[:12]}"
    child = f"while [ ! -e /tmp/{go.name} ]; do sleep 0.05; done"
    with ProcessTracker(resolver) as tracker:
        try:
            init = run_detached(bundle, kb.container_id)
            subprocess.run(["runc", "exec", "-d", kb.container_id, "sh", "-c", child],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True, timeout=60)
            ps = subprocess.run(["runc", "ps", "--format", "json", kb.container_id], capture_output=True,
                                text=True, check=True, timeout=60)
            # The shell, not the short sleeps of its loop.
            (pid,) = [p for p in orjson.loads(ps.stdout) if p != init and _comm(p) == "sh"]
            go.touch()
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), "the exec'd child gone")
        finally:
            kubebundle.stop(kb)
            go.unlink(missing_ok=True)
        wait_until(lambda: resolver.stats.exits >= 1, "its exit noted")
    found = resolver.lookup(pid, at=time.time() - 1)
    assert found.settled and found.info is not None, found
    info = found.info
    assert (info.pod, info.namespace, info.container_id) == (kb.pod, kb.namespace, kb.container_id)
    assert tracker.stats.remembered >= 1 and resolver.stats.tracked >= 1
    assert ContainerResolver().lookup(pid, at=time.time() - 1).info is None  # the control: never seen


def test_tracker_refuses_a_second_start() -> None:
    require("root")
    tracker = ProcessTracker(Recorder())
    with tracker, pytest.raises(RuntimeError):
        tracker.start()
