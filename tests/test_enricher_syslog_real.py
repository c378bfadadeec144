"""The syslog source against what a local user can do, through a real rsyslogd (tests/support/auditd.py).

- A process chooses its own name (prctl) and executable path. Named `x#035Zhide` (rsyslog's escape of
  auditd's 0x1D separator, followed by a capital), it must not cut its own record short: the line keeps
  its syscall, arch and action, and `--action kill_process` keeps it.
- Any local user can write a kernel-looking audit line into syslog (`logger -t kernel`); the syslog
  source cannot tell it from the kernel's, so it marks its lines unverified, and `auto` never reads it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from syscribe.enricher import sources
from syscribe.enricher.sources import SourceError, choose
from tests.support.auditd import no_audit_daemon, printk_ratelimit, private_rsyslogd
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")
HOSTILE_COMM = "x#035Zhide"  # 10 bytes: fits comm's 15

# Names itself, loads a filter that kills getsid (libseccomp through ctypes), prints its pid, calls it.
CHILD = r"""
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(15, sys.argv[1].encode(), 0, 0, 0) == 0  # PR_SET_NAME
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # allow
assert lib.seccomp_rule_add(ctx, 0x80000000, 124, 0) == 0  # getsid: kill the process
assert lib.seccomp_load(ctx) == 0
print(os.getpid(), flush=True)
os.getsid(0)
"""


def wait_until(ready: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def enrich(*args: str) -> tuple[list[dict[str, Any]], str]:
    done = subprocess.run([SYSCRIBE, "enrich", "--no-follow", "--start", "beginning", *args],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [orjson.loads(line) for line in done.stdout.splitlines()], done.stderr.decode()


@pytest.mark.real
def test_a_process_named_like_the_separator_keeps_its_record(tmp_path: Path) -> None:
    require("root", "rsyslogd", "libseccomp")
    no_audit_daemon()
    # The executable's path is the process's choice too: a copy of the interpreter under a hostile name.
    exe = tmp_path / "py#035Yexe"
    shutil.copy2(os.path.realpath(sys.executable), exe)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with printk_ratelimit(0), private_rsyslogd(tmp_path / "rsyslog") as daemon:
        done = subprocess.run([str(exe), str(script), HOSTILE_COMM], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == -signal.SIGSYS, done.stderr
        pid = int(done.stdout.split()[0])
        needle = f" pid={pid} ".encode()
        wait_until(lambda: needle in daemon.log.read_bytes(), "the kernel's record in kern.log")
    line = next(raw for raw in daemon.log.read_bytes().splitlines() if needle in raw)
    assert f'comm="{HOSTILE_COMM}"'.encode() in line and b"#035Yexe" in line  # as the kernel wrote them
    records, _err = enrich("--source", "syslog", "--input", str(daemon.log), "--action", "kill_process")
    mine = [r for r in records if r["pid"] == pid]
    assert len(mine) == 1, records
    assert mine[0]["comm"] == HOSTILE_COMM and mine[0]["executable"] == str(exe)
    got = (mine[0]["syscallName"], mine[0]["arch"], mine[0]["action"])
    assert got == ("getsid", "x86_64", "kill_process")


@pytest.mark.real
def test_a_line_any_user_can_forge_into_syslog_is_marked_unverified(tmp_path: Path) -> None:
    require("root", "rsyslogd")
    if shutil.which("logger") is None:
        pytest.fail("logger (bsdutils) is needed to write to syslog as a local program")
    with private_rsyslogd(tmp_path / "rsyslog", local=True) as daemon:
        syslog = daemon.directory / "syslog"
        forged = (
            f"audit: type=1326 audit({time.time():.3f}:4242): auid=4294967295 uid=0 gid=0 ses=4294967295 "
            f'pid={os.getpid()} comm="victim" exe="/usr/bin/victim" sig=31 arch=c000003e syscall=83 '
            "compat=0 ip=0x7f0000000000 code=0x80000000"
        )
        # As any user could (the socket stands for /dev/log, which everyone may write to).
        subprocess.run(["logger", "-u", str(daemon.directory / "log"), "-t", "kernel", "--", forged],
                       check=True, timeout=30)
        wait_until(lambda: syslog.exists() and b"audit(" in syslog.read_bytes() and b":4242)" in
                   syslog.read_bytes(), "the forged line in syslog")
    assert b" kernel: audit: type=1326 " in syslog.read_bytes()  # nothing in the file tells it apart
    records, err = enrich("--source", "syslog", "--input", str(syslog))
    forged_lines = [r for r in records if r["auditID"].endswith(":4242")]
    assert len(forged_lines) == 1 and forged_lines[0]["action"] == "kill_process"
    assert forged_lines[0]["verified"] is False
    assert all(r["verified"] is False for r in records)
    assert '"verified": false' in err and "any local user" in err
    # The same record from a verified source has no such key (the line's shape is unchanged).
    audit_log = tmp_path / "audit.log"
    audit_log.write_text("type=SECCOMP msg=" + forged.split("type=1326 ", 1)[1] + "\n")
    records, err = enrich("--source", "auditd", "--input", str(audit_log))
    assert len(records) == 1 and "verified" not in records[0] and "verified" not in err


def test_auto_never_picks_a_syslog_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no auditd log and no netlink, a syslog file on the node is not taken: kmsg, or an error."""
    syslog = tmp_path / "syslog"
    syslog.write_text("")
    monkeypatch.setattr(sources, "SYSLOG_FILES", (syslog,))
    monkeypatch.setattr(sources, "AUDIT_LOG", tmp_path / "no-audit.log")
    monkeypatch.setattr(sources, "audit_status", lambda: None)
    monkeypatch.setattr(sources, "_netlink_usable", lambda: False)
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    monkeypatch.setattr(sources, "KMSG", kmsg)
    assert choose("auto", None) == ("kmsg", kmsg)
    kmsg.unlink()
    with pytest.raises(SourceError, match="--source syslog") as info:
        choose("auto", None)
    assert "\n" not in str(info.value)
    # Asked for, it is read (and its lines are marked: the test above).
    assert choose("syslog", None) == ("syslog", syslog)
