"""The parser on records this kernel writes: a child process loads a seccomp filter (libseccomp through
ctypes) that logs, fails with an errno or kills chosen syscalls, including an i386 syscall made with
`int 0x80` and an x32-numbered one, and its SECCOMP records are read from the audit netlink multicast
group (read only: it takes nothing from an auditd another test may run) and fed to the assembler.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syscribe.enricher.events import AuditEvent, EventAssembler
from tests.support.prereq import require

pytestmark = pytest.mark.real

NETLINK_AUDIT = 9
SO_RCVBUFFORCE = 33
AUDIT_NLGRP_READLOG = 1
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid

# The child: filter, then the syscalls whose records we expect. It prints its pid first.
CHILD = r'''
import ctypes, ctypes.util, mmap, os, sys
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
for name in ("seccomp_rule_add",):
    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, LOG, KILL_PROCESS, ERRNO = 0x7FFF0000, 0x7FFC0000, 0x80000000, 0x00050000
SCMP_FLTATR_CTL_LOG = 6
mode = sys.argv[1]
ctx = lib.seccomp_init(ALLOW)
assert lib.seccomp_arch_add(ctx, 0x40000003) == 0  # i386
assert lib.seccomp_arch_add(ctx, 0x4000003E) == 0  # x32
if mode == "log":
    assert lib.seccomp_rule_add(ctx, LOG, 121, 0) == 0  # getpgid
    assert lib.seccomp_rule_add(ctx, LOG, 39, 0) == 0  # getpid, on every arch of the filter
elif mode == "errno":
    assert lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1) == 0  # errno actions are logged too
    assert lib.seccomp_rule_add(ctx, ERRNO | 13, 121, 0) == 0  # getpgid -> EACCES
elif mode == "kill":
    assert lib.seccomp_rule_add(ctx, KILL_PROCESS, 124, 0) == 0  # getsid
assert lib.seccomp_load(ctx) == 0
print(os.getpid(), flush=True)
if mode == "log":
    os.getpgid(0)
    # i386 getpid (20) through int 0x80: mov eax, 20; int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))
    ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
    # x32 getpid: the kernel may lack the x32 ABI (ENOSYS), seccomp sees and logs it first
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.syscall(ctypes.c_long(0x40000000 | 39))
elif mode == "errno":
    try:
        os.getpgid(0)
    except PermissionError:
        print("EACCES", flush=True)
elif mode == "kill":
    os.getsid(0)
'''


@pytest.fixture
def multicast() -> Iterator[socket.socket]:
    require("root", "libseccomp")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    try:
        # Every record on the machine comes through this group: a buffer others' cannot fill.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        sock.bind((0, AUDIT_NLGRP_READLOG))
        sock.settimeout(0.2)
        yield sock
    finally:
        sock.close()


def run_child(tmp_path: Path, mode: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run(
        [sys.executable, str(script), mode], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.stdout, f"child printed nothing: {done.stderr}"
    return int(done.stdout.split()[0]), done


def collect(sock: socket.socket, pid: int, wanted: int) -> list[AuditEvent]:
    """Feed every SECCOMP message of `pid` to an assembler until `wanted` events came (or 10 s)."""
    assembler = EventAssembler()
    events: list[AuditEvent] = []
    needle = f" pid={pid} ".encode()
    deadline = time.monotonic() + 10
    while len(events) < wanted and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue  # others' records overflowed the buffer; ours may be in what follows
            raise
        length, rtype, _, _, _ = NLMSG_HDR.unpack_from(data)
        payload = data[NLMSG_HDR.size : max(length, NLMSG_HDR.size)]
        if needle in payload:
            events += assembler.feed_netlink(rtype, payload, None, time.monotonic())
            events += assembler.flush(None)
    return events


def test_logged_syscalls_named_by_their_own_arch(multicast: socket.socket, tmp_path: Path) -> None:
    pid, _ = run_child(tmp_path, "log")
    events = collect(multicast, pid, 4)
    got = {(e.arch.name if e.arch else None, e.syscall, e.syscall_name, e.action) for e in events}
    assert ("x86_64", 121, "getpgid", "log") in got
    assert ("x86_64", 39, "getpid", "log") in got
    assert ("i386", 20, "getpid", "log") in got  # not x86_64's 20 (writev)
    assert ("x32", 0x40000000 | 39, "getpid", "log") in got
    for event in events:
        assert event.kind == "seccomp" and event.record_type == "SECCOMP"
        assert event.pid == pid
        assert event.uid == os.geteuid()
        assert event.exe == os.path.realpath(sys.executable)
        assert event.comm == Path(sys.executable).name[:15]
        assert event.node is None
        assert abs(event.timestamp - time.time()) < 3600
    compat = next(e for e in events if e.arch and e.arch.name == "i386")
    assert compat.details["compat"] == "1"


def test_errno_action_and_value(multicast: socket.socket, tmp_path: Path) -> None:
    pid, done = run_child(tmp_path, "errno")
    assert "EACCES" in done.stdout
    events = collect(multicast, pid, 1)
    # Since 4.14 the kernel logs the action without its data (code=0x50000): the errno is not known.
    assert [(e.syscall_name, e.action, e.errno) for e in events] == [("getpgid", "errno", None)]
    assert events[0].details["code"] == "0x50000"


def test_kill_process(multicast: socket.socket, tmp_path: Path) -> None:
    pid, done = run_child(tmp_path, "kill")
    assert done.returncode == -signal.SIGSYS
    events = collect(multicast, pid, 1)
    assert [(e.syscall_name, e.action, e.errno) for e in events] == [("getsid", "kill_process", None)]
    assert events[0].details["sig"] == str(int(signal.SIGSYS))
