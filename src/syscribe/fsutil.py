"""Writing files so that no reader ever sees half of one, and reading files of bounded size.

Stdlib only: the hook uses this on its lean import path. Writes go to a temporary file in the target's
directory, are flushed to disk, and are renamed over the target (then the directory is flushed too), so
the target is either the old file or the whole new one. Symlinks at the target are refused rather than
followed or replaced. (The hook's walk from an output root down to a profile's directory, following no
symlink, is syscribe.hooks.output.open_dir.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

DEFAULT_READ_LIMIT = 64 * 1024 * 1024


class FsError(OSError):
    """An expected failure, with a message for the user (what was wrong, what to do)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "file error"


def write_atomic(
    path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, *, sync: bool = True
) -> None:
    """Replace `path` with `data` atomically. The directory must exist; `path` must not be a symlink.

    With `sync` (the default) the data and the rename are on disk when this returns, so a power loss
    leaves the old file or the new one; without it only the atomicity holds.
    """
    from pathlib import Path  # here, not at the top: the hook's read of its config needs neither

    target = Path(path)
    directory = target.parent
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FsError(f"{target}: directory {directory} does not exist; create it first") from None
    except NotADirectoryError:
        raise FsError(f"{target}: {directory} is not a directory") from None
    except OSError as exc:
        raise FsError(f"{target}: cannot open directory {directory}: {exc.strerror}") from None
    try:
        write_atomic_at(dir_fd, target.name, data, mode, shown=str(target), sync=sync)
    finally:
        os.close(dir_fd)


def write_atomic_at(
    dir_fd: int,
    name: str,
    data: bytes | str,
    mode: int = 0o644,
    *,
    shown: str | None = None,
    sync: bool = True,
) -> None:
    """Replace `name` in the directory `dir_fd` with `data` atomically."""
    shown = shown or name
    if not name or "/" in name or name in (".", ".."):
        raise FsError(f"{shown}: not a file name")
    payload = data.encode() if isinstance(data, str) else data
    _refuse_link_or_dir(dir_fd, name, shown)
    # Short whatever `name` is: a temporary must fit NAME_MAX wherever `name` itself does.
    tmp = f".{_prefix(name, 32)}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        raise FsError(f"{shown}: cannot create a file in its directory: {exc.strerror}") from None
    try:
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        if isinstance(exc, OSError) and not isinstance(exc, FsError):
            raise FsError(f"{shown}: cannot write: {exc.strerror}") from None
        raise
    # The rename is durable only once the directory entry is on disk.
    if sync:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)


def _prefix(name: str, limit: int) -> str:
    """The start of `name`, at most `limit` bytes of UTF-8, cut between characters."""
    return name.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def _refuse_link_or_dir(dir_fd: int, name: str, shown: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise FsError(f"{shown} is a symlink; syscribe does not write through symlinks, name the real file")
    if stat.S_ISDIR(st.st_mode):
        raise FsError(f"{shown} is a directory; name a file to write")


def check_writable_dir(path: str | os.PathLike[str]) -> None:
    """Fail now, before any work, when `path` could not be written later."""
    from pathlib import Path

    target = Path(path)
    directory = target.parent
    if not directory.exists():
        raise FsError(
            f"{target}: directory {directory} does not exist; create it first (mkdir -p {directory})"
        )
    if not directory.is_dir():
        raise FsError(f"{target}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise FsError(f"{target}: directory {directory} is not writable")
    if target.is_symlink():
        raise FsError(f"{target} is a symlink; syscribe does not write through symlinks, name the real file")
    if target.is_dir():
        raise FsError(f"{target} is a directory; name a file to write")


def read_limited(
    path: str | os.PathLike[str], limit: int = DEFAULT_READ_LIMIT, *, follow_symlinks: bool = True
) -> bytes:
    """The contents of a regular file of at most `limit` bytes (not a FIFO, device or directory; not a
    symlink either, when `follow_symlinks` is false)."""
    shown = os.fspath(path)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not hang the open
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FsError(f"{shown}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise FsError(f"{shown}: is a symlink; it is not followed") from None
        raise FsError(f"{shown}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FsError(f"{shown}: not a regular file")
        if st.st_size > limit:
            raise FsError(f"{shown}: {st.st_size} bytes; files over {limit} bytes are refused")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while being read
                raise FsError(f"{shown}: more than {limit} bytes; files over {limit} bytes are refused")
        return b"".join(chunks)
    except OSError as exc:
        if isinstance(exc, FsError):
            raise
        raise FsError(f"{shown}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
