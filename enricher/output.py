"""The file enriched lines go to (enrichedline.py makes them).

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
from pathlib import Path

from syscribe.enricher.checkpoint import TAIL_BYTES, OutputMark, line_tail_before, tail_hash


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
