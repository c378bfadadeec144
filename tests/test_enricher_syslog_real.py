"""The syslog source against what a local user can do, through a real rsyslogd (tests/support/auditd.py).

- A process chooses its own name (prctl) and executable path. Named `x#035Zhide` (rsyslog's escape of
  auditd's 0x1D separator, followed by a capital), it must not cut its own record short: the line keeps
  its syscall, arch and action, and `--action kill_process` keeps it.
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
