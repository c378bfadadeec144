"""`syscribe enrich` end to end on this machine: a real container with a seccomp profile, real audit
records through each of the four sources, enriched lines that name the pod.

The workload is a busybox shell in a runc container that CRI-O could have made for pod shop/web-*
(tests/support/kubebundle.py): its profile logs `chdir` and `mkdir` and kills the process on `sync`.
The shell does `cd /tmp` (logged, from the shell itself: the container's init, which stays alive), waits
until the test has seen that line enriched, then `exec sync`: the same pid is killed by its filter. A
killed process is gone before anyone can look at /proc, so its line names the pod only because the
enricher looked the pid up when its first record was read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from syscribe.enricher import sources
from syscribe.enricher.sources import choose
from tests.support import kubebundle
from tests.support.auditd import (
    no_audit_daemon,
    printk_ratelimit,
    private_auditd,
    private_rsyslogd,
)
from tests.support.kubebundle import KubeBundle, crio_like_bundle, run_detached
from tests.support.prereq import require

pytestmark = pytest.mark.real

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")
ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ARCHES,
    "syscalls": [
        {"names": ["chdir", "mkdir", "mkdirat"], "action": "SCMP_ACT_LOG"},
        {"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"},
    ],
}


@dataclass
class Workload:
    kb: KubeBundle
    pid: int
    go: Path


@contextlib.contextmanager
def pod_workload(rootfs: Path, tmp_path: Path, *, runtime: str = "runc",
                 profile: dict[str, Any] | None = None) -> Iterator[Workload]:
    kb = crio_like_bundle(pod=f"web-{secrets.token_hex(3)}", namespace="shop", container="app")
    tag = kb.container_id[:12]
    go = rootfs / "tmp" / f"go-{tag}"
    script = (
        f"cd /tmp; mkdir -p /tmp/probe-{tag}; "
        f"while [ ! -e /tmp/go-{tag} ]; do sleep 0.05; done; exec sync"
    )
    bundle = kb.write(tmp_path / f"bundle-{tag}", rootfs, ["sh", "-c", script],
                      seccomp=profile or PROFILE, runtime=runtime)
    try:
        pid = run_detached(bundle, kb.container_id, runtime=runtime)
        yield Workload(kb, pid, go)
    finally:
        kubebundle.stop(kb, runtime=runtime)
        go.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (rootfs / "tmp" / f"probe-{tag}").rmdir()


class Enricher:
    def __init__(self, process: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.process, self.out, self.err = process, out, err

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        data = self.out.read_bytes()
        return [orjson.loads(line) for line in data.splitlines()[: data.count(b"\n")]]

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 90.0) -> dict[str, Any]:
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
            f"stderr: {self.err.read_text()[-2000:]!r}"
        )


@contextlib.contextmanager
def enricher(tmp_path: Path, *args: str) -> Iterator[Enricher]:
    out = tmp_path / "enriched.json"
    err = tmp_path / "enrich.err"
    ready = tmp_path / "metrics.prom"
    cmd = [SYSCRIBE, "enrich", *args, "--output", str(out), "--metrics-textfile", str(ready),
           "--hold-seconds", "0.1"]
    with open(err, "wb") as err_fh:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_fh)
    try:
        # The metrics textfile is written once the source is open (and, with --start end, positioned).
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"enricher not ready (rc={process.poll()}): {err.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Enricher(process, out, err)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def exercise(e: Enricher, w: Workload) -> tuple[dict[str, Any], dict[str, Any]]:
    logged = e.wait_for(lambda r: r["pid"] == w.pid and r["syscallName"] == "chdir")
    w.go.touch()
    killed = e.wait_for(lambda r: r["pid"] == w.pid and r["syscallName"] == "sync")
    return logged, killed


def check(e: Enricher, w: Workload, logged: dict[str, Any], killed: dict[str, Any]) -> None:
    kb = w.kb
    for record in (logged, killed):
        assert (record["namespace"], record["pod"], record["container"]) == ("shop", kb.pod, "app"), record
        assert (record["containerID"], record["podUID"], record["type"]) == (
            kb.container_id, kb.pod_uid, "seccomp"
        ), record
        assert record["arch"] == "x86_64"
        assert record["node"]
    assert (logged["syscallID"], logged["action"], logged["comm"]) == (80, "log", "sh")
    assert (killed["syscallID"], killed["action"]) == (162, "kill_process")
    # one line per record
    ids = [r["auditID"] for r in e.records() if r["pid"] == w.pid]
    assert len(ids) == len(set(ids)), ids


@pytest.fixture
def real(busybox_rootfs: Path) -> Path:
    require("root", "runc", "busybox", "auditctl")
    return busybox_rootfs


def test_auditd_source(real: Path, tmp_path: Path) -> None:
    require("auditd")
    with (
        private_auditd(tmp_path / "audit") as daemon,
        enricher(tmp_path, "--source", "auditd", "--input", str(daemon.log), "--start", "beginning") as e,
        pod_workload(real, tmp_path) as w,
    ):
        logged, killed = exercise(e, w)
    check(e, w, logged, killed)
    # auditd's ENRICHED format names the syscall itself (wrongly in 3.0.9); the line has ours.
    assert b"\x1d" in daemon.log.read_bytes()


def test_kmsg_source_without_auditd(real: Path, tmp_path: Path) -> None:
    no_audit_daemon()
    with (
        printk_ratelimit(0),
        enricher(tmp_path, "--source", "kmsg", "--start", "end") as e,
        pod_workload(real, tmp_path) as w,
    ):
        logged, killed = exercise(e, w)
    check(e, w, logged, killed)


def test_netlink_source_without_auditd(real: Path, tmp_path: Path) -> None:
    no_audit_daemon()
    with enricher(tmp_path, "--source", "netlink") as e, pod_workload(real, tmp_path) as w:
        logged, killed = exercise(e, w)
    check(e, w, logged, killed)


def test_syslog_source_through_rsyslog(real: Path, tmp_path: Path) -> None:
    require("rsyslogd")
    no_audit_daemon()
    with (
        printk_ratelimit(0),
        private_rsyslogd(tmp_path / "rsyslog") as daemon,
        enricher(tmp_path, "--source", "syslog", "--input", str(daemon.log), "--start", "beginning") as e,
        pod_workload(real, tmp_path) as w,
    ):
        logged, killed = exercise(e, w)
    check(e, w, logged, killed)
    assert b" kernel: audit: type=1326 " in daemon.log.read_bytes()


def test_errno_action_through_crun(real: Path, tmp_path: Path) -> None:
    """runc 1.1.5 refuses seccomp flags, so errno (logged only with SECCOMP_FILTER_FLAG_LOG) needs crun."""
    require("crun")
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHES,
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["chdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"},
        ],
    }
    with (
        enricher(tmp_path, "--source", "netlink") as e,
        pod_workload(real, tmp_path, runtime="crun", profile=profile) as w,
    ):
        logged, _killed = exercise(e, w)
    # Since 4.14 the kernel logs the action alone (code=0x50000): the errno number is not in the record.
    assert logged["action"] == "errno" and logged["syscallName"] == "chdir"
    assert (logged["pod"], logged["runtime"]) == (w.kb.pod, "cri-o")


def test_auto_picks_netlink_when_no_audit_daemon_runs(
    real: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel says no daemon is registered: an auditd log (stale, the daemon's last) is not taken,
    since nothing writes it; netlink gets every record."""
    no_audit_daemon()
    stale = tmp_path / "audit.log"
    stale.write_text("type=DAEMON_END msg=audit(1700000000.000:1): op=terminate\n")
    monkeypatch.setattr(sources, "AUDIT_LOG", stale)
    assert choose("auto", None) == ("netlink", None)


def test_kmsg_lines_written_by_userspace_are_not_taken(real: Path, tmp_path: Path) -> None:
    """Anyone with write access to /dev/kmsg can print `audit: type=1326`; the kernel marks those
    with the user facility, and the kmsg source takes only the kernel's own."""
    fake_pid = os.getpid()
    forged = (
        f"<5>audit: type=1326 audit({time.time():.3f}:999999999): auid=0 uid=0 gid=0 ses=1 pid={fake_pid} "
        'comm="forged" exe="/bin/forged" sig=0 arch=c000003e syscall=83 compat=0 ip=0x0 code=0x7ffc0000\n'
    )
    with enricher(tmp_path, "--source", "kmsg", "--start", "end") as e:
        with open("/dev/kmsg", "w") as kmsg:
            kmsg.write(forged)
        # The enricher says when it refuses a line (the first time): then it has read the forged one.
        # A fixed sleep here passed on an idle machine and failed on a loaded one.
        deadline = time.monotonic() + 60
        while "userspace" not in e.err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not [r for r in e.records() if r.get("comm") == "forged"]
    assert "userspace" in e.err.read_text()
