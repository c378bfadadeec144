"""Where audit records come from, behind one interface.

Every source hands out Batches: lines (or netlink messages) in the order the kernel or the log has
them, each able to say where a restart should resume to read it again. `read(timeout)` returns None
when nothing came within `timeout` (an idle tick: the pipeline uses it to release held events and to
checkpoint).

- `auditd`: auditd's log file (default /var/log/audit/audit.log), followed across rotation.
- `syslog`: kern.log / syslog / messages, the same way (the records are the kernel's printk lines).
  Unverified: any local user can put a line that looks like the kernel's into these files (`logger -t
  kernel`), and nothing in the file tells it apart, so this source is never chosen by `auto` and its
  lines say `"verified": false`. The other three carry only what the kernel or auditd wrote.
- `kmsg`: the kernel ring buffer /dev/kmsg; the position is the record's sequence number, valid for
  one boot (the checkpoint keeps the boot id).
- `netlink`: the audit multicast group (NETLINK_AUDIT, group AUDIT_NLGRP_READLOG). Every record, no
  printk rate limit, no auditd needed, but no history: what the kernel sends while nobody listens is
  gone, so this source has no checkpoint.

`auto` takes the first that works of: auditd's log when an audit daemon is registered with the kernel
(or, when that cannot be asked, when its log exists); the netlink group; /dev/kmsg. The order puts
complete and resumable first: auditd gets every record and keeps them; netlink gets every record but
only while we run; kmsg only gets what printk let through its rate limit (10 lines per 5 s by default)
and only while no auditd takes the records. A syslog file is read only when asked for (`--source
syslog`, or an `--input` not named audit*): what it holds may not come from the kernel.
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from syscribe.enricher import nlmsg
from syscribe.enricher.checkpoint import FileMark, KmsgMark, SourceMark
from syscribe.enricher.follow import FileFollower, FollowError, Report

SOURCE_NAMES = ("auto", "auditd", "syslog", "kmsg", "netlink")
AUDIT_LOG = Path("/var/log/audit/audit.log")
SYSLOG_FILES = (Path("/var/log/kern.log"), Path("/var/log/syslog"), Path("/var/log/messages"))
KMSG = Path("/dev/kmsg")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
AUDIT_GET = 1000
# Types below this are the audit protocol's own requests and replies, not records.
AUDIT_FIRST_RECORD = 1100
NLMSG_ERROR = 2
_NLMSGHDR = nlmsg.HEADER
# What audit_status starts with: mask, enabled, failure, pid.
_AUDIT_STATUS = struct.Struct("=IIII")
SO_RCVBUFFORCE = nlmsg.SO_RCVBUFFORCE


class SourceError(RuntimeError):
    """The source cannot be used; the message says why and what to do."""


@dataclass(slots=True)
class Batch:
    lines: list[bytes]
    # locate(i): where a restart resumes to read lines[i] again (i == len(lines): after the batch);
    # None for a source without checkpoints.
    locate: Callable[[int], SourceMark | None]
    # netlink: the record type of each message (its payload has no type= of its own)
    types: list[int] | None = None


class Source(Protocol):
    name: str
    checkpointable: bool
    # False when others than the kernel and auditd can write what the source reads (syslog files).
    verified: bool

    @property
    def eof(self) -> bool: ...

    def read(self, timeout: float) -> Batch | None: ...

    def end_mark(self) -> SourceMark | None: ...

    def close(self) -> None: ...


def _readable_by(fd: int | socket.socket, deadline: float) -> bool:
    """Whether `fd` (a file descriptor or socket) has something to read before `deadline` (monotonic)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    ready, _, _ = select.select([fd], [], [], left)
    return bool(ready)


def _no_mark(_index: int) -> SourceMark | None:
    return None


# --- files ---------------------------------------------------------------------------------------------


class FileSource:
    checkpointable = True
    verified: bool

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        follow: bool,
        start: str,
        mark: FileMark | None,
        report: Report | None = None,
        max_line: int = 1 << 20,
        rotate_grace: float = 1.0,
    ) -> None:
        self.name = name
        self.path = path
        self.verified = name != "syslog"
        self._follower = FileFollower(
            path, follow=follow, start=start, mark=mark, report=report, max_line=max_line,
            rotate_grace=rotate_grace,
        )

    @property
    def eof(self) -> bool:
        return self._follower.eof

    def read(self, timeout: float) -> Batch | None:
        try:
            chunk = self._follower.read(timeout)
        except FollowError as exc:
            raise SourceError(str(exc)) from None
        if chunk is None:
            return None
        return Batch(chunk.lines, chunk.mark_at)

    def end_mark(self) -> SourceMark | None:
        return self._follower.end_mark()

    def close(self) -> None:
        self._follower.close()


# --- /dev/kmsg -------------------------------------------------------------------------------------------

_KMSG_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_SUPPRESSED = re.compile(rb"kauditd_printk_skb: (\d+) callbacks suppressed")


def parse_kmsg(record: bytes) -> tuple[int, int, bytes] | None:
    """(facility, sequence number, message) of one /dev/kmsg record, None when it is not one.

    The message is the first line after the `;`, with the kernel's \\xNN escapes undone. The facility
    tells the kernel's own lines (0) from those userspace wrote to /dev/kmsg (the kernel never lets
    userspace claim facility 0), so a forged `audit: type=1326` from a process is not taken.
    """
    header, sep, rest = record.partition(b";")
    if not sep:
        return None
    fields = header.split(b",", 4)
    if len(fields) < 4 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    if len(fields[0]) > 5 or len(fields[1]) > 20:
        return None
    prefix = int(fields[0])
    seq = int(fields[1])
    message = rest.split(b"\n", 1)[0]
    if b"\\x" in message:
        message = _KMSG_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), message)
    return prefix >> 3, seq, message


def boot_id(path: Path = BOOT_ID) -> str:
    try:
        return path.read_text().strip()[:64]
    except OSError:
        return ""


@dataclass(slots=True)
class _KmsgLocator:
    boot: str
    seqs: list[int]
    after: int

    def __call__(self, index: int) -> SourceMark | None:
        if index < len(self.seqs):
            return KmsgMark(self.boot, self.seqs[index])
        return KmsgMark(self.boot, self.after)


class KmsgSource:
    name = "kmsg"
    checkpointable = True
    verified = True  # userspace's lines are told apart by their facility and not taken

    def __init__(
        self,
        *,
        follow: bool,
        start: str,
        mark: KmsgMark | None,
        report: Report | None = None,
        path: Path = KMSG,
        max_batch: int = 4096,
    ) -> None:
        self.eof = False
        self._follow = follow
        self._report = report or (lambda code, message: None)
        self._max_batch = max_batch
        self._boot = boot_id()
        self._skip_below = 0
        self._next: int | None = None  # sequence number expected next
        self.lost = 0  # records the ring overwrote before we read them
        self.suppressed = 0  # records printk's rate limit dropped (as the kernel reports them)
        self.foreign = 0  # audit-looking lines written by userspace, not taken
        self.other = 0  # kernel lines that are not audit records
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            hint = "run as root (CAP_SYSLOG), or set kernel.dmesg_restrict=0"
            raise SourceError(f"cannot read {path}: {exc.strerror}; {hint}") from None
        if not stat.S_ISCHR(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise SourceError(f"{path} is not the kernel's kmsg device")
        if start == "end":
            os.lseek(self._fd, 0, os.SEEK_END)
        elif start == "checkpoint":
            if mark is None:
                self._report("no_checkpoint", "no checkpoint yet: reading the whole kernel buffer")
            elif mark.boot_id != self._boot:
                self._report(
                    "new_boot", "the checkpoint is from another boot: reading the whole kernel buffer"
                )
            else:
                self._skip_below = mark.next_seq
                self._next = mark.next_seq

    def read(self, timeout: float) -> Batch | None:
        if self.eof:
            return None
        deadline = time.monotonic() + timeout
        lines: list[bytes] = []
        seqs: list[int] = []
        while True:
            got_any, last = self._read_batch(lines, seqs)
            if lines or (got_any and last is not None):
                after = last + 1 if last is not None else self._next or 0
                return Batch(lines, _KmsgLocator(self._boot, seqs, after))
            if not self._follow:
                self.eof = True
                return None
            if not _readable_by(self._fd, deadline):
                return None

    def _read_batch(self, lines: list[bytes], seqs: list[int]) -> tuple[bool, int | None]:
        """Up to max_batch records, those of audit added to `lines` and `seqs`: whether any was read,
        and the sequence number of the last one."""
        got_any = False
        last = None
        for _ in range(self._max_batch):
            try:
                record = os.read(self._fd, 16384)
            except BlockingIOError:
                break
            except BrokenPipeError:
                # The ring overwrote records we had not read; the next read gets the oldest left.
                continue
            except OSError as exc:
                raise SourceError(f"reading /dev/kmsg failed: {exc.strerror}") from None
            got_any = True
            parsed = parse_kmsg(record)
            if parsed is None:
                continue
            facility, seq, message = parsed
            if seq < self._skip_below:
                continue
            if self._next is not None and seq > self._next:
                missed = seq - self._next
                self.lost += missed
                self._report(
                    "kmsg_lost",
                    f"{missed} kernel log records were overwritten before they could be read",
                )
            self._next = seq + 1
            last = seq
            if not message.startswith(b"audit: "):
                self.other += 1
                if facility == 0 and b"kauditd_printk_skb" in message:
                    self._count_suppressed(message)
                continue
            if facility != 0:
                self.foreign += 1
                self._report("foreign", "ignored an audit-looking line written to /dev/kmsg by userspace")
                continue
            lines.append(message)
            seqs.append(seq)
        return got_any, last

    def _count_suppressed(self, message: bytes) -> None:
        """kauditd's line saying how many audit records printk's rate limit dropped."""
        found = _SUPPRESSED.search(message)
        if found:
            count = int(found[1])
            self.suppressed += count
            self._report(
                "ratelimited",
                f"printk's rate limit dropped {count} audit records; set "
                "kernel.printk_ratelimit=0 or use --source netlink or auditd",
            )

    def end_mark(self) -> SourceMark | None:
        if self._next is None:
            return None
        return KmsgMark(self._boot, self._next)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --- netlink ---------------------------------------------------------------------------------------------


def parse_netlink_messages(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """(type, sender port id, payload) of each netlink message in one datagram, and how many bytes at
    the end did not form a message (a broken header stops the walk: lengths after it mean nothing)."""
    messages, rest = nlmsg.walk(data)
    # The kernel's payload is text; some versions count a trailing NUL in the length.
    return [(m.type, m.port, data[m.start : m.end].rstrip(b"\0")) for m in messages], rest


class NetlinkSource:
    """The audit multicast group, read with the standard library's socket module.

    pyroute2 frames these messages right (its generic nlmsg has the header's length and type) but has no
    audit message class: the text payload is only reachable through the raw buffer, every message goes
    through its asyncio machinery, and its socket answers only the thread that made it (measured in
    bench/netlink.py, docs/enricher.md). A plain AF_NETLINK socket gives the payload directly, a recv
    timeout through select, and ENOBUFS (records lost to an overflowing socket buffer) as an error we can
    count; the framing is nlmsg.py's, shared with the process tracker.
    """

    name = "netlink"
    checkpointable = False
    verified = True  # only the kernel (port id 0) is taken

    def __init__(self, *, follow: bool = True, report: Report | None = None, rcvbuf: int = 8 << 20,
                 max_batch: int = 4096) -> None:
        self.eof = False
        self._follow = follow
        self._report = report or (lambda code, message: None)
        self._max_batch = max_batch
        self._count = 0
        self.lost_overrun = 0
        self.malformed = 0
        self.foreign = 0
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        except OSError as exc:
            raise SourceError(f"cannot open an audit netlink socket: {exc.strerror}") from None
        try:
            nlmsg.join(sock, AUDIT_NLGRP_READLOG, rcvbuf)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise SourceError(
                    "joining the audit multicast group needs CAP_AUDIT_READ: run as root"
                ) from None
            raise SourceError(f"cannot join the audit multicast group: {exc.strerror}") from None
        sock.setblocking(False)
        self._sock = sock

    def read(self, timeout: float) -> Batch | None:
        if self.eof:
            return None
        payloads: list[bytes] = []
        types: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            for _ in range(self._max_batch):
                try:
                    data = self._sock.recv(1 << 16)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        self.lost_overrun += 1
                        self._report(
                            "netlink_overrun",
                            "the kernel dropped audit records: the netlink socket buffer overflowed",
                        )
                        continue
                    raise SourceError(f"reading the audit netlink socket failed: {exc.strerror}") from None
                messages, rest = parse_netlink_messages(data)
                if rest:
                    self.malformed += 1
                for mtype, port, payload in messages:
                    if port != 0:
                        self.foreign += 1  # only the kernel sends to this group
                        continue
                    if mtype < AUDIT_FIRST_RECORD:
                        continue
                    payloads.append(payload)
                    types.append(mtype)
            if payloads:
                self._count += len(payloads)
                return Batch(payloads, _no_mark, types)
            if not self._follow:
                self.eof = True
                return None
            if not _readable_by(self._sock, deadline):
                return None

    def end_mark(self) -> SourceMark | None:
        return None

    def close(self) -> None:
        self._sock.close()


def audit_status() -> tuple[int, int] | None:
    """(enabled, pid of the registered audit daemon) from the kernel, None if it cannot be asked."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
    except OSError:
        return None
    try:
        sock.settimeout(1.0)
        sock.bind((0, 0))
        flags = 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK
        sock.sendto(_NLMSGHDR.pack(_NLMSGHDR.size, AUDIT_GET, flags, 1, 0), (0, 0))
        for _ in range(4):
            data = sock.recv(1 << 16)
            for mtype, _port, payload in parse_netlink_messages(data)[0]:
                if mtype == AUDIT_GET and len(payload) >= _AUDIT_STATUS.size:
                    _mask, enabled, _failure, pid = _AUDIT_STATUS.unpack_from(payload)
                    return enabled, pid
                if mtype == NLMSG_ERROR and len(payload) >= 4:
                    (code,) = struct.unpack_from("=i", payload)
                    if code != 0:
                        return None
    except OSError:
        return None
    finally:
        sock.close()
    return None


# --- choosing -------------------------------------------------------------------------------------------


def default_syslog_file() -> Path | None:
    for path in SYSLOG_FILES:
        if path.is_file():
            return path
    return None


def _netlink_usable() -> bool:
    try:
        NetlinkSource(follow=False).close()
    except SourceError:
        return False
    return True


def choose(source: str, input_path: Path | None) -> tuple[str, Path | None]:
    """The concrete source (and file) for `source`, `auto` resolved as the module docstring says."""
    if source not in SOURCE_NAMES:
        raise SourceError(f"unknown source {source!r}; use one of {', '.join(SOURCE_NAMES)}")
    if source in ("kmsg", "netlink"):
        if input_path is not None and source == "netlink":
            raise SourceError("--input makes no sense with --source netlink (it reads a socket)")
        return source, input_path
    if source == "auditd":
        return source, input_path or AUDIT_LOG
    if source == "syslog":
        path = input_path or default_syslog_file()
        if path is None:
            raise SourceError(
                "no syslog file found (" + ", ".join(map(str, SYSLOG_FILES)) + "); give --input"
            )
        return source, path
    if input_path is not None:
        return "auditd" if input_path.name.startswith("audit") else "syslog", input_path
    status = audit_status()
    if status is not None:
        if status[1] != 0 and AUDIT_LOG.is_file():
            return "auditd", AUDIT_LOG
    elif AUDIT_LOG.is_file():
        return "auditd", AUDIT_LOG
    if _netlink_usable():
        return "netlink", None
    if os.access(KMSG, os.R_OK):
        return "kmsg", KMSG
    # Not a syslog file, even when there is one: any local user can write kernel-looking lines into it.
    raise SourceError(
        "no audit source found: no auditd log, no netlink access, no /dev/kmsg; run as root, or read "
        "a syslog file with --source syslog (its lines are marked unverified: any local user can "
        "write to it)"
    )


def open_source(
    source: str,
    input_path: Path | None,
    *,
    follow: bool,
    start: str,
    mark: SourceMark | None,
    report: Report | None = None,
) -> Source:
    """Open a concrete source (not `auto`: see choose())."""
    if source in ("auditd", "syslog"):
        assert input_path is not None
        file_mark = mark if isinstance(mark, FileMark) else None
        return FileSource(source, input_path, follow=follow, start=start, mark=file_mark, report=report)
    if source == "kmsg":
        kmsg_mark = mark if isinstance(mark, KmsgMark) else None
        return KmsgSource(follow=follow, start=start, mark=kmsg_mark, report=report, path=input_path or KMSG)
    if source == "netlink":
        return NetlinkSource(follow=follow, report=report)
    raise SourceError(f"unknown source {source!r}")
