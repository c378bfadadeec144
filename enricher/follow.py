"""Follow a log file by name across rotation, truncation and deletion, line by line, resumably.

Reading goes by explicit offsets (pread) on an open descriptor, so a file renamed away is finished by
its inode before the new file at the same name is read, and nothing is consumed past the last newline
(a line still being written stays where it is). Each batch of lines comes as a FileChunk that can say,
for any line in it, the FileMark a restart needs to resume at exactly that line.

Rotation schemes handled:
- rename and create (auditd, logrotate `create`, rsyslog after HUP): the old file is read to its end
  and the new one is started only once it has data or the old one has been quiet for `rotate_grace`
  seconds (a writer may still append to the old inode until it reopens);
- copytruncate: the file shrinks under us; what we had not read yet is in the copy, found by the hash
  of the last line we read at our offset, and read from there before the truncated file is read again;
- delete and re-create, and a path briefly replaced by a directory or a symlink (reported, never
  followed): the old descriptor is kept until a regular file is back.
A restart from a checkpoint whose file was rotated meanwhile finds it among its siblings by inode and
reads it and every newer sibling before the live file.

inotify (through watchdog) only wakes the reader up; every decision is made from stat results, so a
missed or coalesced event costs at most one poll interval.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syscribe.enricher.checkpoint import TAIL_BYTES, FileMark, line_tail_before, tail_hash

Report = Callable[[str, str], None]

# Rotated siblings that are compressed cannot be read by offset; they are never candidates.
_COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip")


class FollowError(RuntimeError):
    """A problem that ends reading (only without --follow: when following, problems are reported and
    waited out)."""


@dataclass(frozen=True, slots=True)
class FileId:
    gen: int  # counts the files this follower opened; orders them
    path: str
    dev: int
    inode: int


@dataclass(slots=True)
class FileChunk:
    """Complete lines (newline stripped) lying back to back in one file from `start` to `end`."""

    lines: list[bytes]
    file: FileId
    start: int
    end: int  # after the last line's newline (or its last byte, for a file finished without one)
    prev_tail: bytes  # the end of the line before lines[0] (b"" at the start of the file)

    def mark_at(self, index: int) -> FileMark:
        """Where to resume to read lines[index] next (index == len(lines): after this chunk)."""
        if index >= len(self.lines):
            tail = self.lines[-1] if self.lines else self.prev_tail
            return self._mark(self.end, tail)
        offset = self.start + sum(len(line) + 1 for line in self.lines[:index])
        tail = self.lines[index - 1] if index else self.prev_tail
        return self._mark(offset, tail)

    def _mark(self, offset: int, tail: bytes) -> FileMark:
        return FileMark(self.file.path, self.file.dev, self.file.inode, offset, tail_hash(tail[-TAIL_BYTES:]))


@dataclass(slots=True)
class _Open:
    fd: int
    id: FileId
    live: bool  # the file at the followed name (False: a rotated sibling read to its end, then left)


@dataclass(slots=True)
class _State:
    offset: int = 0  # start of the first byte not yet consumed
    buf: bytes = b""  # bytes from `offset` read but not yet ending in a newline
    discarding: int = 0  # > 0: inside a line longer than max_line, this many bytes skipped so far
    disc_tail: bytes = b""  # the end of what was skipped so far
    prev_tail: bytes = b""  # the end of the line before `offset`
    idle: bool = False  # we hit the end of the file since we last returned data


class _Waker:
    """Wakes the reader when anything happens in the followed file's directory (inotify)."""

    def __init__(self, directory: Path) -> None:
        self.event = threading.Event()
        self._observer: Any = None
        self._directory = directory

    def start(self) -> bool:
        if self._observer is not None:
            return True
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return False
        # Its emitter logs a harmless race when stopped; a lost wake-up costs one poll, nothing more.
        logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
        wake = self.event

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                wake.set()

        observer = Observer()
        try:
            observer.schedule(Handler(), str(self._directory), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError:
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


class FileFollower:
    def __init__(
        self,
        path: Path,
        *,
        follow: bool = True,
        start: str = "end",
        mark: FileMark | None = None,
        report: Report | None = None,
        chunk_size: int = 1 << 18,
        max_line: int = 1 << 20,
        rotate_grace: float = 1.0,
        poll_interval: float = 1.0,
    ) -> None:
        if start not in ("end", "beginning", "checkpoint"):
            raise ValueError(f"start must be end, beginning or checkpoint, not {start!r}")
        self.path = path
        self.follow = follow
        self.eof = False
        self._start = start
        self._mark = mark
        self._report = report or (lambda code, message: None)
        self._chunk_size = chunk_size
        self._max_line = max_line
        self._grace = rotate_grace
        self._poll = poll_interval
        self._gen = 0
        self._cur: _Open | None = None
        self._queue: list[_Open] = []  # files to read after the current one, oldest first
        self._st = _State()
        self._rotated_at: float | None = None
        self._started = False
        self._pending: list[FileChunk] = []
        self._waker = _Waker(path.parent) if follow else None
        self._said: set[str] = set()
        self._problem: str | None = None
        self.lines_skipped_oversize = 0

    # -- reporting -----------------------------------------------------------------------------------

    def _say(self, code: str, message: str, *, once: bool = False) -> None:
        if once:
            if code in self._said:
                return
            self._said.add(code)
        self._report(code, message)

    def _clear(self, code: str) -> None:
        self._said.discard(code)

    # -- opening -------------------------------------------------------------------------------------

    def _open(self, path: Path, live: bool) -> _Open | None:
        """Open a regular file without following a symlink; None (reported) when that cannot be done."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            self._cannot("missing", f"{path} does not exist; waiting for it" if self.follow
                         else f"{path} does not exist")
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._cannot("symlink", f"{path} is a symlink; not following it (give the file itself)")
            elif exc.errno in (errno.EACCES, errno.EPERM):
                self._cannot(
                    "unreadable",
                    f"cannot read {path}: {exc.strerror}; run as root or add this user to the log's group",
                )
            else:
                self._cannot("open_error", f"cannot open {path}: {exc.strerror}")
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            self._cannot("not_regular", f"{path} is {what}" + ("; waiting for a regular log file there"
                                                              if self.follow else ", not a log file"))
            return None
        for code in ("missing", "symlink", "unreadable", "open_error", "not_regular"):
            self._clear(code)
        self._gen += 1
        return _Open(fd, FileId(self._gen, str(path), st.st_dev, st.st_ino), live)

    def _cannot(self, code: str, message: str) -> None:
        """A file that cannot be read: waited out (and said once) when following, else the error."""
        self._problem = message
        if self.follow:
            self._say(code, message, once=True)

    def _close(self, f: _Open | None) -> None:
        if f is not None:
            os.close(f.fd)

    def _window_before(self, fd: int, offset: int) -> bytes | None:
        """The tail of the line ending at `offset` in the file, None if no line ends there."""
        if offset <= 0:
            return b""
        begin = max(0, offset - TAIL_BYTES - 2)
        try:
            window = os.pread(fd, offset - begin, begin)
        except OSError:
            return None
        if len(window) != offset - begin:
            return None
        if not window.endswith(b"\n"):
            # The last line of a finished file may have no newline; the hash still tells.
            cut = window.rfind(b"\n")
            if cut < 0 and begin > 0:
                return window[-TAIL_BYTES:]
            return window[cut + 1 :][-TAIL_BYTES:]
        return line_tail_before(window, begin == 0)

    def _matches(self, fd: int, offset: int, want_hash: str) -> bytes | None:
        """The line tail at `offset` when its hash is `want_hash`, else None."""
        try:
            size = os.fstat(fd).st_size
        except OSError:
            return None
        if size < offset:
            return None
        tail = self._window_before(fd, offset)
        if tail is None or tail_hash(tail) != want_hash:
            return None
        return tail

    def _siblings(self, exclude_inode: int | None = None) -> list[tuple[float, Path, os.stat_result]]:
        """Rotated copies next to the followed file (audit.log.1, kern.log-20240101, ...), by mtime."""
        found: list[tuple[float, Path, os.stat_result]] = []
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return found
        base = self.path.name
        for entry in entries:
            name = entry.name
            if name == base or not name.startswith(base) or name.endswith(_COMPRESSED):
                continue
            if name[len(base)] not in ".-_":
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_ino == exclude_inode:
                continue
            found.append((st.st_mtime, Path(entry.path), st))
        found.sort(key=lambda item: (item[0], item[1].name))
        return found

    def _start_files(self) -> None:
        """Choose the first file and offset from the start mode and the checkpoint."""
        live = self._open(self.path, live=True)
        mark = self._mark if self._start == "checkpoint" else None
        if self._start == "checkpoint" and mark is None:
            # Nothing read yet is nothing written yet: read all there is, lose nothing.
            message = f"no checkpoint yet: reading {self.path} from the beginning"
            self._say("no_checkpoint", message, once=True)
        if mark is None:
            self._cur = live
            if live is not None and self._start == "end":
                self._seek_end(live)
            return
        if live is not None and (live.id.dev, live.id.inode) == (mark.dev, mark.inode):
            tail = self._matches(live.fd, mark.offset, mark.tail_hash)
            if tail is not None:
                self._cur = live
                self._st = _State(offset=mark.offset, prev_tail=tail)
                return
        found = self._find_content(
            mark.offset, mark.tail_hash, inode=(mark.dev, mark.inode),
            exclude_inode=live.id.inode if live is not None else None,
        )
        if found is not None:
            f, tail, st = found
            self._continue_in(f, tail, st, mark.offset, live)
            self._say("resumed_rotated", f"resuming in rotated {f.id.path} at byte {mark.offset}")
            return
        # A damaged checkpoint (an offset past the end or inside a line, another file's inode) still
        # names the line it ends after: where the live file holds that line, resume after it.
        located = self._locate_line(live.fd, mark.tail_hash) if live is not None else None
        if live is not None and located is not None:
            offset, tail = located
            self._cur = live
            self._st = _State(offset=offset, prev_tail=tail)
            self._say(
                "checkpoint_relocated",
                f"the checkpoint's position (inode {mark.inode}, byte {mark.offset}) is not where "
                f"{self.path} holds the line it ends after; that line is at byte {offset}: resuming there",
            )
            return
        if live is not None and (live.id.dev, live.id.inode) == (mark.dev, mark.inode):
            self._say(
                "checkpoint_mismatch",
                f"{self.path} does not hold the line the checkpoint ends after (rewritten in place, or a "
                "damaged checkpoint): reading it from the beginning; lines read before that it still "
                "holds are written again",
            )
        else:
            self._say(
                "checkpoint_gone",
                f"no file next to {self.path} holds what the checkpoint read (rotated away, deleted or "
                "rewritten): reading it from the beginning; records between may be missing",
            )
        self._cur = live
        self._st = _State()

    @staticmethod
    def _locate_line(fd: int, want_hash: str) -> tuple[int, bytes] | None:
        """(offset after, tail) of the first line of the file whose tail hashes to `want_hash`.

        A full read of the file, line by line: only when a checkpoint matches nothing else.
        """
        if not want_hash:
            return None
        offset = 0
        carry = b""
        while True:
            try:
                chunk = os.pread(fd, 1 << 20, offset)
            except OSError:
                return None
            if not chunk:
                return None
            data = carry + chunk
            base = offset - len(carry)
            start = 0
            while True:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                tail = data[max(start, end - TAIL_BYTES) : end]
                if tail and tail_hash(tail) == want_hash:
                    return base + end + 1, tail
                start = end + 1
            # Only the last TAIL_BYTES of a line take part in its hash.
            carry = data[max(start, len(data) - TAIL_BYTES) :]
            offset += len(chunk)

    def _find_content(
        self, offset: int, want_hash: str, *, inode: tuple[int, int] | None, exclude_inode: int | None
    ) -> tuple[_Open, bytes, os.stat_result] | None:
        """The rotated sibling whose bytes before `offset` end with the line last read (by its hash):
        the file that had the checkpoint's inode, if it still holds that, else a copy (copytruncate)."""
        candidates = self._siblings(exclude_inode=exclude_inode)
        # The inode first; then the newest copies first (the likeliest to hold what was just read).
        candidates.sort(key=lambda item: ((item[2].st_dev, item[2].st_ino) != inode, -item[0]))
        for _mtime, path, st in candidates:
            if st.st_size < offset:
                continue
            # At offset 0 any file "matches": only the checkpoint's own inode will do.
            if offset == 0 and (st.st_dev, st.st_ino) != inode:
                continue
            f = self._open(path, live=False)
            if f is None:
                continue
            tail = self._matches(f.fd, offset, want_hash)
            if tail is None:
                self._close(f)
                continue
            return f, tail, st
        return None

    def _continue_in(
        self, f: _Open, tail: bytes, st: os.stat_result, offset: int, live: _Open | None
    ) -> None:
        """Read `f` from `offset`, then every sibling rotated after it, oldest first, then `live`."""
        newer = [
            g for g in (
                self._open(path, live=False)
                for mtime, path, sib in self._siblings(exclude_inode=st.st_ino)
                if mtime >= st.st_mtime and (live is None or sib.st_ino != live.id.inode)
            )
            if g is not None
        ]
        self._cur = f
        self._st = _State(offset=offset, prev_tail=tail)
        self._queue[:0] = [*newer, *([live] if live is not None else [])]

    def _seek_end(self, f: _Open) -> None:
        size = os.fstat(f.fd).st_size
        if size == 0:
            self._st = _State()
            return
        begin = max(0, size - (1 << 16))
        window = os.pread(f.fd, size - begin, begin)
        cut = window.rfind(b"\n")
        if cut >= 0:
            # Begin with the line being written now, if any: it is new.
            tail = line_tail_before(window[: cut + 1], begin == 0)
            self._st = _State(offset=begin + cut + 1, prev_tail=tail or b"")
        elif begin == 0:
            self._st = _State()
        else:
            # A line longer than the window is being written: start after what is there; the rest of
            # it comes as a fragment the parser counts as malformed.
            self._st = _State(offset=size, prev_tail=window[-TAIL_BYTES:])

    # -- copytruncate ----------------------------------------------------------------------------------

    def _from_copy(self, offset: int, want_hash: str) -> bool:
        """After a truncation: read the rest of what we had not read from the copy that holds it."""
        live = self._cur
        assert live is not None
        if offset == 0:
            return False
        found = self._find_content(offset, want_hash, inode=None, exclude_inode=live.id.inode)
        if found is None:
            return False
        f, tail, st = found
        self._gen += 1
        again = FileId(self._gen, live.id.path, live.id.dev, live.id.inode)
        reopened = _Open(os.dup(live.fd), again, True)
        self._close(live)
        self._continue_in(f, tail, st, offset, reopened)
        self._say("truncated", f"{self.path} was truncated (copytruncate); reading the rest from {f.id.path}")
        return True

    # -- reading -------------------------------------------------------------------------------------

    def _verify_position(self) -> bool:
        """After being idle at the end: is the file still the one we read (not truncated and rewritten)?"""
        assert self._cur is not None
        st = self._st
        if st.offset == 0 and not st.buf:
            return True
        try:
            size = os.fstat(self._cur.fd).st_size
        except OSError:
            return True
        if size < st.offset + len(st.buf):
            return False
        if st.offset > 0 and st.prev_tail:
            want = st.prev_tail[-256:] + b"\n"
            got = os.pread(self._cur.fd, len(want), st.offset - len(want))
            if got != want:
                return False
        if st.buf:
            piece = st.buf[-256:]
            got = os.pread(self._cur.fd, len(piece), st.offset + len(st.buf) - len(piece))
            if got != piece:
                return False
        return True

    def _on_truncated(self) -> None:
        assert self._cur is not None
        offset = self._st.offset
        want = tail_hash(self._st.prev_tail)
        if self._cur.live and self._from_copy(offset, want):
            return
        self._say(
            "truncated",
            f"{self.path} was truncated and no rotated copy holds what followed byte {offset}; "
            "continuing from its beginning (lines written just before the truncation may be lost)",
        )
        self._st = _State()

    def _read_some(self) -> FileChunk | None:
        """One pread's worth of complete lines from the current file; None at its end."""
        cur = self._cur
        assert cur is not None
        st = self._st
        data = self._pread(cur, st)
        if data is None:
            return None
        if st.discarding:
            return self._end_discarding(cur, st, data)
        chunk_start = st.offset
        prev_tail = st.prev_tail
        if st.buf:
            data = st.buf + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._keep_unfinished(st, data)
            return None
        # One split, no copy of the complete part: the piece after the last newline is the unfinished line.
        lines = data.split(b"\n")
        rest = lines.pop()
        if cut > self._max_line and max(map(len, lines)) > self._max_line:
            return self._cut_at_oversized(cur, st, lines, chunk_start, prev_tail)
        st.offset = chunk_start + cut + 1
        st.prev_tail = lines[-1][-TAIL_BYTES:]
        self._keep_unfinished(st, rest)
        return FileChunk(lines, cur.id, chunk_start, st.offset, prev_tail)

    def _pread(self, cur: _Open, st: _State) -> bytes | None:
        """The next bytes of the current file; None at its end (idle), after an error or a truncation."""
        if st.idle and not self._verify_position():
            self._on_truncated()
            return None
        read_pos = st.offset + len(st.buf) + st.discarding
        try:
            data = os.pread(cur.fd, self._chunk_size, read_pos)
        except OSError as exc:
            self._say("read_error", f"reading {cur.id.path} failed: {exc.strerror}; retrying", once=True)
            st.idle = True
            return None
        if not data:
            if not st.idle:
                try:
                    size = os.fstat(cur.fd).st_size
                except OSError:
                    size = read_pos
                if size < read_pos:
                    self._on_truncated()
                    return None
            st.idle = True
            return None
        st.idle = False
        return data

    def _keep_unfinished(self, st: _State, piece: bytes) -> None:
        """Keep the unfinished line `piece` for the next read, or skip it from here if it is too long."""
        if len(piece) > self._max_line:
            st.discarding = len(piece)
            st.disc_tail = piece[-TAIL_BYTES:]
            st.buf = b""
        else:
            st.buf = piece

    def _end_discarding(self, cur: _Open, st: _State, data: bytes) -> FileChunk | None:
        """Inside a line longer than max_line: skip on to its end; an empty chunk once it is there."""
        nl = data.find(b"\n")
        if nl < 0:
            st.discarding += len(data)
            st.disc_tail = (st.disc_tail + data)[-TAIL_BYTES:]
            return None
        skipped = st.discarding + nl
        st.prev_tail = (st.disc_tail + data[:nl])[-TAIL_BYTES:]
        st.offset += skipped + 1
        st.discarding = 0
        st.disc_tail = b""
        self._skipped_oversized(cur, skipped)
        # The rest of `data` is read again from the new offset.
        return FileChunk([], cur.id, st.offset, st.offset, st.prev_tail)

    def _cut_at_oversized(
        self, cur: _Open, st: _State, lines: list[bytes], chunk_start: int, prev_tail: bytes
    ) -> FileChunk:
        """The complete `lines` read from `chunk_start` hold one longer than max_line: the lines before
        it, and the next read starts after it."""
        i, line = next((i, line) for i, line in enumerate(lines) if len(line) > self._max_line)
        kept = lines[:i]
        end = chunk_start + sum(len(x) + 1 for x in kept)
        st.offset = end + len(line) + 1
        st.buf = b""
        st.prev_tail = line[-TAIL_BYTES:]
        self._skipped_oversized(cur, len(line))
        return FileChunk(kept, cur.id, chunk_start, end, prev_tail)

    def _skipped_oversized(self, cur: _Open, size: int) -> None:
        self.lines_skipped_oversize += 1
        message = f"skipped a line of {size} bytes in {cur.id.path} (longer than {self._max_line})"
        self._say("oversized_line", message)

    def _finish_current(self) -> FileChunk | None:
        """The current file will get no more lines: its unfinished last line is a (cut) line too."""
        cur = self._cur
        assert cur is not None
        st = self._st
        chunk = None
        if st.buf:
            chunk = FileChunk([st.buf], cur.id, st.offset, st.offset + len(st.buf), st.prev_tail)
            st.prev_tail = st.buf[-TAIL_BYTES:]
            st.offset += len(st.buf)
            st.buf = b""
        self._close(cur)
        self._cur = None
        return chunk

    def _switch_to(self, f: _Open) -> None:
        self._cur = f
        self._st = _State()
        self._rotated_at = None

    def _check_name(self, now: float) -> bool:
        """At the end of the current file: has the name moved on? True when the current file changed."""
        cur = self._cur
        assert cur is not None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            self._say(
                "missing",
                f"{self.path} is gone (deleted or rotated); finishing the old file and waiting for it",
                once=True,
            )
            return False
        except OSError as exc:
            self._say("stat_error", f"cannot stat {self.path}: {exc.strerror}", once=True)
            return False
        if stat.S_ISLNK(st.st_mode):
            self._say("symlink", f"{self.path} is now a symlink; not following it", once=True)
            return False
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            self._say("not_regular", f"{self.path} is now {what}; waiting for a regular log file", once=True)
            return False
        if (st.st_dev, st.st_ino) == (cur.id.dev, cur.id.inode):
            for code in ("missing", "symlink", "not_regular"):
                self._clear(code)
            return False
        if self._rotated_at is None:
            self._rotated_at = now
        if st.st_size == 0 and now - self._rotated_at < self._grace:
            return False
        try:
            if os.fstat(cur.fd).st_size > self._st.offset + len(self._st.buf) + self._st.discarding:
                return True  # the old file grew meanwhile: read that first
        except OSError:
            pass
        try:
            old_mtime = os.fstat(cur.fd).st_mtime
        except OSError:
            old_mtime = 0.0
        # Files rotated in between (the name moved on twice since we last looked) come first.
        between = [
            path for mtime, path, sib in self._siblings(exclude_inode=cur.id.inode)
            if mtime >= old_mtime and (sib.st_dev, sib.st_ino) != (st.st_dev, st.st_ino)
        ]
        opened = [f for f in (self._open(path, live=False) for path in between) if f is not None]
        new = self._open(self.path, live=True)
        if new is None:
            for f in opened:
                self._close(f)
            return False
        done = self._finish_current()
        if done is not None:
            self._pending.append(done)
        self._queue.extend([*opened, new])
        self._rotated_at = None
        self._say("rotated", f"{self.path} was rotated; now reading the new file")
        return True

    def read(self, timeout: float) -> FileChunk | None:
        """The next lines, or None when there were none within `timeout` (or, without follow, at the end:
        then `eof` is set)."""
        deadline = time.monotonic() + timeout
        if not self._started:
            self._started = True
            if self._waker is not None:
                self._waker.start()
            self._start_files()
            if self._cur is None and not self.follow:
                raise FollowError(self._last_problem())
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._waker is not None:
                self._waker.event.clear()
            if self._cur is None:
                if self._queue:
                    self._switch_to(self._queue.pop(0))
                    continue
                self._cur = self._open(self.path, live=True)
                if self._cur is None:
                    if not self.follow:
                        raise FollowError(self._last_problem())
                    if not self._wait(deadline):
                        return None
                    continue
                self._st = _State()
            chunk = self._read_some()
            if chunk is not None:
                return chunk
            if not self._st.idle:
                continue
            now = time.monotonic()
            if not self._cur.live:
                done = self._finish_current()
                if done is not None:
                    self._pending.append(done)
                continue
            if not self.follow:
                self.eof = True
                return None
            if self._check_name(now):
                continue
            if not self._wait(deadline):
                return None

    def _wait(self, deadline: float) -> bool:
        """Sleep until something may have changed; False when the deadline passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        step = min(left, self._poll)
        if self._waker is not None:
            self._waker.start()  # the directory may have appeared since
        if self._rotated_at is not None:
            step = min(step, max(0.01, self._grace / 4))
        if self._waker is not None and self._waker.event.wait(step):
            return True
        if self._waker is None:
            time.sleep(step)
        return time.monotonic() < deadline

    def _last_problem(self) -> str:
        return self._problem or f"cannot read {self.path}"

    def end_mark(self) -> FileMark | None:
        """Where to resume after everything returned so far."""
        cur = self._cur
        if cur is None:
            return None
        st = self._st
        return FileMark(cur.id.path, cur.id.dev, cur.id.inode, st.offset, tail_hash(st.prev_tail))

    def close(self) -> None:
        if self._waker is not None:
            self._waker.stop()
        self._close(self._cur)
        self._cur = None
        for f in self._queue:
            self._close(f)
        self._queue.clear()
