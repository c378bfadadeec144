"""Why a command run under a profile died of a signal: its own profile, and at which syscall.

`syscribe run` used to end with status 139 or 159 and no word. Two signals tell of the profile:

- SIGSYS: a kill action (or an unhandled trap). Which syscall it was is only in the kernel's SECCOMP
  audit record, which the audit multicast group carries (NETLINK_AUDIT group 1, CAP_AUDIT_READ: root)
  whether or not auditd runs; the record is sent by the kernel's audit thread, shortly after the kill.
- SIGSEGV when the profile does not allow exit_group: exit_group fails (an errno action), libc has no
  way left to end the process and it crashes. The profile says so; no record is needed.

`explain` is pure; `AuditTap` is the thin socket shell.
"""

from __future__ import annotations

import select
import signal
import socket
import struct
import time

from syscribe import arch as archmod
from syscribe import syscalls
from syscribe.enricher import auditparse
from syscribe.ociprofile import ALLOWING, Profile

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
AUDIT_SECCOMP = 1326
_NLMSGHDR = struct.Struct("=IHHII")


def allows(profile: Profile, name: str) -> bool | None:
    """Whether the profile lets `name` through; None when only its arguments decide."""
    for rule in profile.syscalls:
        if name in rule.names:
            if rule.args:
                return None
            return rule.allows
    return profile.default_action in ALLOWING


def describe(fields: dict[str, str]) -> str | None:
    """`mkdir (x86_64, kill_process)` from a SECCOMP record's fields; None when it names no syscall."""
    number = auditparse.uint(fields.get("syscall"))
    if number is None:
        return None
    try:
        arch = archmod.from_audit(fields.get("arch", ""))
    except archmod.UnknownArchError:
        return f"syscall {number}"
    try:
        name = syscalls.name_of(arch, number)
    except syscalls.LibseccompMissingError:
        name = None
    action, _errno = auditparse.seccomp_action(fields.get("code"))
    detail = ", ".join(x for x in (arch.name, action) if x)
    return f"{name or f'syscall {number}'} ({detail})"


def explain(command: str, signum: int, profile: Profile, record: dict[str, str] | None) -> str | None:
    """One line saying the profile killed `command`, or None when the signal is not the profile's."""
    syscall = describe(record) if record is not None else None
    if signum == signal.SIGSYS:
        if syscall is not None:
            return f"{command} was killed by its own profile (SIGSYS) at {syscall}, which it does not allow"
        return (
            f"{command} was killed by SIGSYS, the signal of a seccomp kill: it made a syscall its profile "
            "does not allow (the kernel's SECCOMP audit record names it; as root, syscribe reads it)"
        )
    if signum == signal.SIGSEGV and allows(profile, "exit_group") is False:
        return (
            f"{command} crashed (SIGSEGV) because its own profile does not allow exit_group: a process "
            "that cannot exit has nothing left to do; allow exit_group (and exit)"
        )
    return None


class AuditTap:
    """The SECCOMP records the kernel multicasts while a command runs (None of it without root)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        except OSError:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, AUDIT_NLGRP_READLOG))
        except OSError:
            sock.close()  # no CAP_AUDIT_READ: the message says where to look instead
            return
        sock.setblocking(False)
        self._sock = sock

    def record_for(self, pid: int, timeout: float = 2.0) -> dict[str, str] | None:
        """The fields of the first SECCOMP record of `pid` (waiting at most `timeout` for it)."""
        if self._sock is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                    return None
                continue
            except OSError:
                continue  # ENOBUFS: others' records overflowed the buffer; ours may still come
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, _seq, port = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                payload = data[offset + _NLMSGHDR.size : offset + length].rstrip(b"\0")
                offset += (length + 3) & ~3
                if mtype != AUDIT_SECCOMP or port != 0:
                    continue
                record = auditparse.parse_netlink(mtype, payload)
                if record is not None and record.fields.get("pid") == str(pid):
                    return record.fields

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

