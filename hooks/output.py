"""Writing under an output root (and reading an input profile) without following any symlink.

The hook opens the profile's directory when the container starts: the root with O_NOFOLLOW, then each
directory below it with openat(O_NOFOLLOW | O_DIRECTORY), creating missing ones with mkdirat. The
tracer keeps that directory fd and, when the container exits, writes through it (a temporary file,
fsync, rename in the same directory). A symlink planted anywhere on the path, before or after the hook
ran, is never followed: a path component that is a symlink fails the walk, and the write goes to the
directory the walk opened.

A dump is two files, and several writers may share one `of:` (the pod-wide key). So the profile is
written first and the metadata second, naming the profile's SHA-256 (`profileSHA256`): a reader takes
a dump as complete when that digest matches the profile beside it, whatever happened in between (a
concurrent writer, a full disk, a SIGKILL between the two renames). Writers of one directory also take
turns (flock on the directory, bounded), so that the last pair written is a matching one.

Temporaries are `.syscribe-<12 hex>.tmp`, short whatever the profile's name. They are made unnamed
(O_TMPFILE) and locked (flock) before they get a name, so a temporary that is not locked belongs to a
writer that died: the next write into the directory removes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping

from syscribe import fsutil
from syscribe.fsutil import FsError
from syscribe.hooks.paths import Placement

# An `if:` profile is read and parsed before the container starts, within timeoutSeconds: 1 MiB
# parses in about 80 ms here (docs/hook.md), where 55 MB held a start 11 s at 664 MB. Real
# profiles are a few KiB (Docker's default: 20 KiB).
MAX_INPUT_BYTES = 1 << 20
# The metadata key naming the SHA-256 (hex) of the profile it describes.
DIGEST_KEY = "profileSHA256"
# How long a writer waits for another writer of the same directory before writing anyway (the digest
# still tells a reader whether the pair matches).
LOCK_SECONDS = 10.0
LOCK_WAIT_SAID = 1.0  # after this long, on_wait is told once
TEMP_RE = re.compile(r"\.syscribe-[0-9a-f]{12}\.tmp")
# What syscribe.fsutil names its temporaries (earlier hooks wrote with it). Those writers lock
# nothing, so only ones this old are taken for dead.
LEGACY_TEMP_RE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp", re.S)
LEGACY_TEMP_AGE = 600.0
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


def profile_digest(data: bytes) -> str:
    """What the metadata's `profileSHA256` holds for a profile file of these bytes."""
    return hashlib.sha256(data).hexdigest()


def dump_complete(profile: bytes, meta: Mapping[str, object]) -> bool:
    """The readers' rule: a profile and the metadata beside it are one dump when the digest matches."""
    return meta.get(DIGEST_KEY) == profile_digest(profile)


def write_outputs(
    dir_fd: int,
    placement: Placement,
    profile_text: str,
    meta_text: str | Mapping[str, object],
    *,
    lock_seconds: float = LOCK_SECONDS,
    on_wait: Callable[[str], None] | None = None,
    stop_waiting: Callable[[], bool] | None = None,
) -> str:
    """Write the profile, then its metadata with `profileSHA256` added; return the digest.

    `meta_text` is the metadata as a JSON object (text, or a mapping). `on_wait` is told, once, when
    another writer of the directory has held it for a while; when `stop_waiting` says so, the write
    goes ahead without its turn."""
    profile = profile_text.encode("utf-8")
    digest = profile_digest(profile)
    doc = dict(json.loads(meta_text) if isinstance(meta_text, str) else meta_text)
    doc[DIGEST_KEY] = digest
    meta = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    with _turn(dir_fd, placement, lock_seconds, on_wait, stop_waiting):
        remove_leftovers(dir_fd)
        _write(dir_fd, placement.name, profile, placement.path)
        _write(dir_fd, placement.meta_name, meta, placement.meta_path)
    return digest


@contextlib.contextmanager
def _turn(
    dir_fd: int,
    placement: Placement,
    seconds: float,
    on_wait: Callable[[str], None] | None,
    stop_waiting: Callable[[], bool] | None,
) -> Iterator[None]:
    """Hold the directory's lock while inside, if it comes within `seconds`. Any user who can open the
    directory can flock it too, so the wait is bounded rather than trusted."""
    directory = placement.path[: len(placement.path) - len(placement.name)].rstrip("/") or "/"
    start = time.monotonic()
    said = False
    locked = False
    while True:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
            break
        except BlockingIOError:
            pass
        except OSError:
            break  # a file system without flock: write unlocked
        waited = time.monotonic() - start
        if waited >= seconds or (stop_waiting is not None and stop_waiting()):
            break
        if not said and waited >= LOCK_WAIT_SAID and on_wait is not None:
            said = True
            on_wait(f"waiting for another writer of {directory} (at most {seconds:g} s)")
        time.sleep(0.02)
    try:
        yield
    finally:
        if locked:
            with contextlib.suppress(OSError):
                fcntl.flock(dir_fd, fcntl.LOCK_UN)


def _write(dir_fd: int, name: str, data: bytes, shown: str) -> None:
    """Replace `name` in `dir_fd` with `data`: a locked temporary, fsync, rename, fsync the directory."""
    check_target(dir_fd, name, shown)
    for attempt in range(3):
        fd, tmp = _temporary(dir_fd, shown)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, 0o644)
                os.fsync(fd)
                if tmp is None:
                    tmp = _name_temporary(dir_fd, fd, shown)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                break
            except FileNotFoundError:
                # Only the named fallback can lose its temporary (a cleaner between its creation and
                # its lock); make another.
                if attempt == 2:
                    raise OutputError(f"{shown}: cannot write: its temporary file kept vanishing") from None
            except BaseException as exc:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dir_fd)
                if isinstance(exc, OSError) and not isinstance(exc, FsError):
                    raise OutputError(f"{shown}: cannot write: {exc.strerror}") from None
                raise
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def _temporary(dir_fd: int, shown: str) -> tuple[int, str | None]:
    """A locked, unnamed file in the directory (name None), or where the file system cannot make one,
    a named one locked right after its creation."""
    flags = os.O_WRONLY | os.O_CLOEXEC
    try:
        fd = os.open(".", flags | os.O_TMPFILE, 0o600, dir_fd=dir_fd)
        tmp = None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise OutputError(f"{shown}: cannot create a file in its directory: {exc.strerror}") from None
        tmp = _temp_name()
        try:
            fd = os.open(tmp, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        except OSError as exc2:
            raise OutputError(f"{shown}: cannot create a file in its directory: {exc2.strerror}") from None
    # Without flock here, a leftover is never taken for dead either: the safe side.
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, tmp


def _name_temporary(dir_fd: int, fd: int, shown: str) -> str:
    """Give the unnamed temporary a name (it is locked already, so no cleaner takes it)."""
    for _ in range(3):
        tmp = _temp_name()
        try:
            os.link(f"/proc/self/fd/{fd}", tmp, dst_dir_fd=dir_fd, follow_symlinks=True)
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{shown}: cannot name its temporary file: {exc.strerror}") from None
    raise OutputError(f"{shown}: cannot name its temporary file")


def _temp_name() -> str:
    return f".syscribe-{secrets.token_hex(6)}.tmp"


def remove_leftovers(dir_fd: int) -> list[str]:
    """Remove the temporaries of writers that died in this directory; the names removed.

    Ours are removed when no one holds their lock; fsutil's (earlier hooks) when older than
    LEGACY_TEMP_AGE too, as their writers lock nothing. Only regular files are touched."""
    removed: list[str] = []
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        ours = TEMP_RE.fullmatch(name) is not None
        if not ours and LEGACY_TEMP_RE.fullmatch(name) is None:
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (not ours and now - st.st_mtime < LEGACY_TEMP_AGE):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer is alive (or flock is unsupported): leave it
            now_st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if (now_st.st_dev, now_st.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(name, dir_fd=dir_fd)
                removed.append(name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def read_input(placement: Placement) -> bytes:
    """The `if:` profile's bytes: a regular file reached without symlinks, at most 1 MiB."""
    dir_fd = open_dir(placement, create=False, what="if:")
    try:
        return fsutil.read_limited(placement.name, MAX_INPUT_BYTES, follow_symlinks=False, dir_fd=dir_fd)
    except FsError as exc:
        raise OutputError(_input_problem(placement.path, exc)) from None
    finally:
        os.close(dir_fd)


def _input_problem(path: str, exc: FsError) -> str:
    """The hook's own words for what fsutil found wrong with the `if:` file."""
    if exc.kind == fsutil.SYMLINK:
        return f"if: {path} is a symlink; name the real file"
    if exc.kind in (fsutil.MISSING, fsutil.OPEN):
        return f"if: {path}: {exc.reason}"
    if exc.kind == fsutil.NOT_REGULAR:
        return f"if: {path} is not a regular file"
    if exc.kind == fsutil.TOO_BIG:
        return (
            f"if: {path} is {exc.size} bytes; at most {MAX_INPUT_BYTES} (an input "
            "profile is read before the container starts): keep the rules you need in a smaller one"
        )
    if exc.kind == fsutil.GREW:
        return f"if: {path} grew past {MAX_INPUT_BYTES} bytes while read"
    return f"if: {path}: cannot read: {exc.reason}"
