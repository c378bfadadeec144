"""Writing under an output root (and reading an input profile) without following any symlink.

The hook opens the profile's directory when the container starts: the root with O_NOFOLLOW, then each
directory below it with openat(O_NOFOLLOW | O_DIRECTORY), creating missing ones with mkdirat. The
tracer keeps that directory fd and, when the container exits, writes through it with
syscribe.fsutil.write_atomic_at (a temporary file, fsync, rename in the same directory). A symlink
planted anywhere on the path, before or after the hook ran, is never followed: a path component that
is a symlink fails the walk, and the write goes to the directory the walk opened.
"""

from __future__ import annotations

import errno
import os
import stat

from syscribe.hooks.paths import Placement

from syscribe.fsutil import FsError, write_atomic_at

MAX_INPUT_BYTES = 64 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutputError(FsError):
    """A path cannot be written or read safely; the message says which part and what to do."""


def open_dir(placement: Placement, *, create: bool, what: str = "of:") -> int:
    """An fd of the directory that will hold `placement.name`; the caller closes it."""
    root = placement.root
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and os.path.islink(root)):
            raise OutputError(
                f"the allowed directory {root} is a symlink; syscribe does not follow symlinks: "
                "configure the real directory"
            ) from None
        if exc.errno == errno.ENOENT:
            hint = f"create it (mkdir -p {root})" if what == "of:" else "check the hook config"
            raise OutputError(f"the allowed directory {root} does not exist; {hint}") from None
        raise OutputError(f"cannot open the allowed directory {root}: {exc.strerror}") from None
    walked = root.rstrip("/")
    try:
        for part in placement.parts:
            walked = f"{walked}/{part}"
            nxt = _step(fd, part, walked, create=create)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(fd: int, part: str, walked: str, *, create: bool) -> int:
    """Open `part` below `fd`, creating it when asked; `fd` stays open (the caller owns it)."""
    for attempt in range(2):
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create or attempt:
                raise OutputError(f"directory {walked} does not exist; create it first") from None
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass  # made by a concurrent hook, or a symlink planted meanwhile: the open decides
            except OSError as exc:
                raise OutputError(f"cannot create directory {walked}: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OutputError(
                    f"{walked} is a symlink or not a directory; syscribe never writes through symlinks"
                ) from None
            raise OutputError(f"cannot open directory {walked}: {exc.strerror}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def check_target(dir_fd: int, name: str, shown: str) -> None:
    """Refuse now what the write would refuse later: a symlink, a directory, a device or FIFO."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{shown}: cannot check it: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{shown} is a symlink; syscribe does not write through symlinks, name a real file")
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{shown} is a directory; name the profile file to write")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{shown} exists and is not a regular file; name another file")


def write_outputs(dir_fd: int, placement: Placement, profile_text: str, meta_text: str) -> None:
    """The metadata first, then the profile, each atomically: whoever watches for profiles finds the
    metadata already there."""
    write_atomic_at(dir_fd, placement.meta_name, meta_text, shown=placement.meta_path)
    write_atomic_at(dir_fd, placement.name, profile_text, shown=placement.path)


def read_input(placement: Placement) -> bytes:
    """The `if:` profile's bytes: a regular file reached without symlinks, at most 64 MiB."""
    dir_fd = open_dir(placement, create=False, what="if:")
    try:
        try:
            fd = os.open(
                placement.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputError(f"if: {placement.path} is a symlink; name the real file") from None
            raise OutputError(f"if: {placement.path}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"if: {placement.path} is not a regular file")
        if st.st_size > MAX_INPUT_BYTES:
            raise OutputError(f"if: {placement.path} is {st.st_size} bytes; at most {MAX_INPUT_BYTES}")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > MAX_INPUT_BYTES:
                raise OutputError(f"if: {placement.path} grew past {MAX_INPUT_BYTES} bytes while read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"if: {placement.path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
