"""Enriched lines: what they hold (pure), which pass the filters (pure), and the file they go to.

One JSON object per event, keys always present and always in the same order (null when unknown), so
that a consumer can rely on the shape. The first ten are the Security Profiles Operator enricher's
(`timestamp type node namespace pod container executable pid syscallID syscallName`), so pipelines
built for it keep working; then what it lacks (`arch action errno comm uid auid containerID podUID
runtime auditID recordType`); then the fields SPO writes for SELinux (`profile perm scontext tcontext
tclass`) or AppArmor (`apparmor operation profile name extra_info`) records; then `labels` (from the
optional API resolver). Unlike SPO, whose `timestamp` is the audit id string, `timestamp` here is the
record's time in RFC 3339 (UTC, milliseconds) and the audit id is in `auditID`.

The writer appends lines to a file (or stdout, a FIFO, a character device such as /dev/null: those are
written as they are, never rotated, cut or synced) and flushes them per batch with write(2); it rotates
the file by size itself (fsync first), reports how many complete lines reached the file when the disk
is full (keeping the rest to write later), and can cut a file back to a checkpoint's length so that a
restart writes nothing twice.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from syscribe.enricher.checkpoint import TAIL_BYTES, OutputMark, line_tail_before, tail_hash
from syscribe.enricher.containers import ContainerInfo
from syscribe.enricher.events import AuditEvent

COMMON_KEYS = (
    "timestamp", "type", "node", "namespace", "pod", "container", "executable", "pid", "syscallID",
    "syscallName", "arch", "action", "errno", "comm", "uid", "auid", "containerID", "podUID", "runtime",
    "auditID", "recordType",
)
SELINUX_KEYS = ("profile", "perm", "scontext", "tcontext", "tclass", "permissive")
APPARMOR_KEYS = ("apparmor", "operation", "profile", "name", "extra_info")
KIND_KEYS: dict[str, tuple[str, ...]] = {"seccomp": (), "selinux": SELINUX_KEYS, "apparmor": APPARMOR_KEYS}
# What SPO puts in an AppArmor line's extra_info.
_APPARMOR_EXTRA = ("requested_mask", "denied_mask", "fsuid", "ouid", "target")
TYPES = ("seccomp", "selinux", "apparmor")


_last_second: list[object] = [None, ""]


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as 2021-02-17T21:11:57.899Z (audit keeps milliseconds)."""
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    # Records come in bursts within one second: format that second once.
    if _last_second[0] != whole:
        try:
            _last_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        except (OverflowError, OSError, ValueError):
            return f"{seconds:.3f}"
        _last_second[0] = whole
    return f"{_last_second[1]}.{ms:03d}Z"


def build_record(event: AuditEvent, info: ContainerInfo | None, node: str) -> dict[str, Any]:
    """The enriched line of an event as an ordered dict (keys in the documented order)."""
    arch = event.arch
    kind = event.kind
    if info is None:
        namespace = pod = container = container_id = pod_uid = runtime = None
    else:
        namespace, pod, container = info.namespace, info.pod, info.container_name
        container_id, pod_uid, runtime = info.container_id, info.pod_uid, info.runtime
    record: dict[str, Any] = {
        "timestamp": rfc3339(event.timestamp),
        "type": kind,
        "node": event.node or node,
        "namespace": namespace,
        "pod": pod,
        "container": container,
        "executable": event.exe,
        "pid": event.pid,
        "syscallID": event.syscall,
        "syscallName": event.syscall_name,
        "arch": arch.name if arch is not None else None,
        "action": event.action,
        "errno": event.errno,
        "comm": event.comm,
        "uid": event.uid,
        "auid": event.auid,
        "containerID": container_id,
        "podUID": pod_uid,
        "runtime": runtime,
        "auditID": event.audit_id,
        "recordType": event.record_type,
    }
    if kind != "seccomp":
        details = event.details
        if kind == "selinux":
            record["profile"] = None
            for key in SELINUX_KEYS[1:]:
                record[key] = details.get(key)
        elif kind == "apparmor":
            record["apparmor"] = details.get("apparmor") or event.action
            record["operation"] = details.get("operation")
            record["profile"] = details.get("profile")
            record["name"] = details.get("name")
            extra = " ".join(f"{k}={details[k]}" for k in _APPARMOR_EXTRA if details.get(k))
            record["extra_info"] = extra or None
    record["labels"] = dict(info.labels) if info is not None and info.labels else {}
    return record


def encode(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events are written. An empty set lets everything through."""

    namespaces: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, namespaces: Iterable[str] = (), types: Iterable[str] = (), actions: Iterable[str] = ()
    ) -> Filter:
        bad = sorted(set(types) - set(TYPES))
        if bad:
            raise ValueError(f"unknown event type {bad[0]!r}; use {', '.join(TYPES)}")
        return cls(frozenset(namespaces), frozenset(types), frozenset(a.lower() for a in actions))

    @property
    def empty(self) -> bool:
        return not (self.namespaces or self.types or self.actions)

    def accepts(self, record: Mapping[str, Any]) -> bool:
        if self.types and record.get("type") not in self.types:
            return False
        if self.namespaces and record.get("namespace") not in self.namespaces:
            return False
        if self.actions:
            action = record.get("action")
            if not isinstance(action, str) or action.lower() not in self.actions:
                return False
        return True


class OutputError(RuntimeError):
    """The output cannot be opened or used at all (not: the disk is full for now)."""


class OutputMismatchError(RuntimeError):
    """The output does not match the checkpoint taken of it; the message says what was done."""


def _tail_hash_at(fd: int, offset: int) -> str | None:
    """tail_hash() of the line of the file at `fd` that ends at `offset`; None where none ends there."""
    if offset <= 0:
        return ""
    begin = max(0, offset - TAIL_BYTES - 2)
    try:
        window = os.pread(fd, offset - begin, begin)
    except OSError:
        return None
    tail = line_tail_before(window, begin == 0)
    return tail_hash(tail) if tail is not None else None


class OutputClosedError(RuntimeError):
    """Whoever read our stdout went away."""


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


class OutputWriter:
    """Appends lines to `path` (None: stdout), with size-based rotation and disk-full tolerance."""

    def __init__(self, path: Path | None, *, max_bytes: int = 0, backups: int = 5, mode: int = 0o640) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(0, backups)
        self._mode = mode
        self._pending: list[bytes] = []
        self._head_done = 0  # bytes of _pending[0] already written (a disk that filled mid-line)
        self.error: str | None = None  # why the last flush stopped short
        self.lines_written = 0
        self.rotations = 0
        self.regular = path is not None  # False for stdout, a FIFO, a character device: no rotation
        if path is None:
            self._fd = sys.stdout.fileno()
            self._dev = self._ino = 0
            self._size = 0
            return
        self._fd = -1
        self._open()

    # -- files ---------------------------------------------------------------------------------------

    def _open(self) -> None:
        assert self.path is not None
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputError(f"output directory {parent} does not exist; create it or choose another")
        try:
            before: os.stat_result | None = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            before = None
        except OSError as exc:
            raise OutputError(f"cannot open output {self.path}: {exc.strerror}") from None
        special = before is not None and not stat.S_ISREG(before.st_mode) and not stat.S_ISLNK(before.st_mode)
        if special and before is not None and not stat.S_ISDIR(before.st_mode):
            fd = self._open_special(before)
        else:
            try:
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, self._mode
                )
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OutputError(f"output {self.path} is a symlink; give the file itself") from None
                if exc.errno == errno.EISDIR:
                    raise OutputError(f"output {self.path} is a directory; give a file path") from None
                raise OutputError(f"cannot open output {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        self.regular = stat.S_ISREG(st.st_mode)
        if not self.regular and not special:
            os.close(fd)  # it became something else between the look and the open
            raise OutputError(f"output {self.path} was replaced while it was opened; try again")
        self._fd = fd
        self._dev, self._ino = st.st_dev, st.st_ino
        self._size = st.st_size if self.regular else 0
        if self.regular:
            self._repair_torn_end()

    def _open_special(self, st: os.stat_result) -> int:
        """A FIFO or a character device (/dev/null): written as it is, never rotated, cut or synced.
        Opened for writing only, so that a FIFO's reader going away is seen (EPIPE) rather than our own
        read end keeping it open; that open waits for a reader, as a shell's would."""
        assert self.path is not None
        if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise OutputError(f"output {self.path} is not a regular file, a FIFO or a character device")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"cannot open output {self.path}: {exc.strerror}") from None
        again = os.fstat(fd)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise OutputError(f"output {self.path} was replaced while it was opened; try again")
        return fd

    def _repair_torn_end(self) -> None:
        """A run that died mid-line (or a disk that filled mid-line) left a line without its end: cut it,
        its event comes again from the checkpoint."""
        if self._size == 0:
            return
        begin = max(0, self._size - (1 << 16))
        window = os.pread(self._fd, self._size - begin, begin)
        if window.endswith(b"\n"):
            return
        cut = window.rfind(b"\n")
        keep = begin + cut + 1 if cut >= 0 else begin
        os.ftruncate(self._fd, keep)
        self._size = keep

    @staticmethod
    def roll_back(path: Path, mark: OutputMark) -> int:
        """Cut `path` back to `mark` when it is the file the mark was taken of and it grew since: those
        lines were written after the checkpoint and will be written again. Returns the bytes cut.

        OutputMismatchError when the file does not end a line at the mark where the mark says (a damaged
        checkpoint): cutting there would drop lines that are never written again, so nothing is cut."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (mark.dev, mark.inode):
                return 0
            if st.st_size <= mark.offset:
                return 0
            if mark.tail_hash is not None and _tail_hash_at(fd, mark.offset) != mark.tail_hash:
                raise OutputMismatchError(
                    f"the checkpoint says {path} was {mark.offset} bytes long, but no line it wrote ends "
                    "there (a damaged checkpoint): not cutting it; lines written after the last "
                    "checkpoint may appear twice"
                )
            os.ftruncate(fd, mark.offset)
            os.fsync(fd)
            return st.st_size - mark.offset
        finally:
            os.close(fd)

    def mark(self) -> OutputMark | None:
        """The output's length as far as complete lines reached it, and the hash of the line there (None
        when it is not a regular file)."""
        if self.path is None or not self.regular:
            return None
        tail = _tail_hash_at(self._fd, self._size)
        return OutputMark(str(self.path), self._dev, self._ino, self._size, tail)

    # -- writing -------------------------------------------------------------------------------------

    def append(self, line: bytes) -> None:
        self._pending.append(line)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write what is pending, up to the rotation size; returns how many complete lines reached the
        output. On a full disk (or quota, or I/O error) it stops, keeps the rest, and sets `error`; call
        again later. Call again (after rotate() when rotate_due()) while `pending`."""
        if not self._pending:
            self.error = None
            return 0
        pending = self._pending
        count = len(pending)
        if self.regular and self.max_bytes > 0:
            # Stop at the line that reaches the rotation size: the caller rotates, then flushes on.
            room = self.max_bytes - self._size
            if room <= 0 or sum(map(len, pending)) > room:
                count = 0
                while count < len(pending) and room > 0:
                    room -= len(pending[count])
                    count += 1
                count = max(count, 1)
        data = b"".join(pending[:count]) if count < len(pending) else b"".join(pending)
        view = memoryview(data)[self._head_done :]
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except BrokenPipeError:
            raise OutputClosedError("the reader of the output went away") from None
        except OSError as exc:
            if exc.errno not in _FULL:
                raise OutputError(f"writing {self.path or 'stdout'} failed: {exc.strerror}") from None
            self.error = f"cannot write {self.path or 'stdout'}: {exc.strerror}"
        else:
            self.error = None
            if written == len(view):
                # All of it (the usual case): no need to walk the lines.
                del pending[:count]
                self._size += len(data)
                self._head_done = 0
                self.lines_written += count
                return count
        return self._account(written)

    def _account(self, written: int) -> int:
        done = 0
        left = written + self._head_done
        pending = self._pending
        while done < len(pending) and left >= len(pending[done]):
            left -= len(pending[done])
            self._size += len(pending[done])
            done += 1
        del pending[:done]
        self._head_done = left if pending else 0
        self.lines_written += done
        return done

    def sync(self) -> None:
        if self.regular and self._fd >= 0:
            os.fdatasync(self._fd)

    def rotate_due(self) -> bool:
        if not self.regular or self.max_bytes <= 0 or self._head_done:
            return False
        return self._size >= self.max_bytes

    def rotate(self) -> None:
        """path -> path.1 -> ... -> path.<backups> (the oldest dropped); a new empty path."""
        assert self.path is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.rotations += 1

    def close(self) -> None:
        if self.path is not None and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
