"""Start the tracer detached from the hook and wait, bounded, until it says it is attached.

The runtime waits for the hook to exit and, with runc, for every copy of the hook's stdout and stderr
to be closed. So the tracer is a grandchild in a session of its own (fork, setsid, fork), holds none
of the hook's stdio (stdin is /dev/null, stdout and stderr the log file or /dev/null) and no other
inherited fd but those it was handed. The hook then does not wait for it, and `podman run --rm`,
which removes the container as soon as it exits, has nothing to wait for either.

Two pipes make a handshake. The tracer reports on one: `pid N`, then `attached` or `error <why>`. On
`attached` the hook writes `go` on the other and exits 0. When the deadline passes first, the hook
kills the tracer through a pidfd and closes the go pipe, so that a tracer that attaches late sees EOF
instead of `go` and detaches: a container the hook let start unrecorded is never recorded halfway.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

MAX_REPORT = 64 * 1024
TRACER_NAME = b"syscribe-tracer"


class Channel:
    """The tracer's end of the handshake."""

    def __init__(self, report_fd: int, go_fd: int) -> None:
        self.report_fd = report_fd
        self.go_fd = go_fd

    def send(self, line: str) -> bool:
        data = (line.replace("\n", " ")[:MAX_REPORT // 2] + "\n").encode("utf-8", "replace")
        try:
            os.write(self.report_fd, data)
        except OSError:
            return False  # the hook is gone
        return True

    def error(self, message: str) -> None:
        self.send(f"error {message}")
        self.close()

    def attached(self) -> bool:
        """Say so and wait for the hook's go; False when it gave up (EOF) instead."""
        if not self.send("attached"):
            self.close()
            return False
        got = b""
        try:
            while len(got) < 3:
                chunk = os.read(self.go_fd, 3 - len(got))
                if not chunk:
                    break
                got += chunk
        except OSError:
            got = b""
        self.close()
        return got == b"go\n"

    def close(self) -> None:
        for attr in ("report_fd", "go_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)


@dataclass(frozen=True, slots=True)
class Launch:
    outcome: str  # "attached", "error", "timeout", "died"
    message: str
    tracer_pid: int | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.outcome == "attached"


def launch(
    body: Callable[[Channel], int],
    *,
    keep: Collection[int],
    output_fd: int | None,
    timeout: float,
    since: float | None = None,
) -> Launch:
    """Run `body` in a detached grandchild; return when it reports, dies, or `timeout` passes, counted
    from `since` (time.monotonic(); default now): the hook's own start, so that its checks count."""
    start = time.monotonic() if since is None else since
    if time.monotonic() - start >= timeout:
        return Launch(
            "timeout",
            f"the tracer did not attach within {timeout:g} s: the checks before it took "
            f"{(time.monotonic() - start) * 1000:.0f} ms, so it was not started",
            None,
            time.monotonic() - start,
        )
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which never returns
        _intermediate(body, keep, output_fd, report_r, report_w, go_r, go_w)
    os.close(report_w)
    os.close(go_r)
    try:
        _reap(child)
        return _wait_for_report(report_r, go_w, start, timeout)
    finally:
        for fd in (report_r, go_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue


def _wait_for_report(report_r: int, go_w: int, start: float, timeout: float) -> Launch:
    deadline = start + timeout
    buf = b""
    tracer_pid: int | None = None
    poller = select.poll()
    poller.register(report_r, select.POLLIN | select.POLLHUP)
    while True:
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            if line.startswith("pid ") and line[4:].isdigit():
                tracer_pid = int(line[4:])
            elif line == "attached":
                try:
                    os.write(go_w, b"go\n")
                except OSError:
                    return Launch("died", "the tracer exited right after attaching", tracer_pid,
                                  time.monotonic() - start)
                return Launch("attached", "", tracer_pid, time.monotonic() - start)
            elif line.startswith("error "):
                return Launch("error", line[6:], tracer_pid, time.monotonic() - start)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if tracer_pid is None:
                tracer_pid = _late_pid(report_r, buf)
            _kill(tracer_pid)
            who = "the tracer" if tracer_pid is None else f"the tracer (pid {tracer_pid})"
            return Launch(
                "timeout",
                f"{who} did not attach within {timeout:g} s and was stopped",
                tracer_pid,
                time.monotonic() - start,
            )
        if not poller.poll(max(1, int(remaining * 1000) + 1)):
            continue
        chunk = os.read(report_r, 4096)
        if not chunk:
            return Launch("died", "the tracer exited without saying why (see the log)", tracer_pid,
                          time.monotonic() - start)
        buf += chunk
        if len(buf) > MAX_REPORT:
            _kill(tracer_pid)
            return Launch("died", "the tracer's report was garbled", tracer_pid, time.monotonic() - start)


def _late_pid(report_r: int, buf: bytes) -> int | None:
    """The tracer's pid, if its report arrived just now (to stop it rather than let it run)."""
    poller = select.poll()
    poller.register(report_r, select.POLLIN)
    if poller.poll(0):
        with contextlib.suppress(OSError):
            buf += os.read(report_r, 4096)
    for raw in buf.split(b"\n"):
        if raw.startswith(b"pid ") and raw[4:].isdigit():
            return int(raw[4:])
    return None


def _kill(pid: int | None) -> None:
    if pid is None:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # already gone
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def _intermediate(  # pragma: no cover - runs in forked children
    body: Callable[[Channel], int],
    keep: Collection[int],
    output_fd: int | None,
    report_r: int,
    report_w: int,
    go_r: int,
    go_w: int,
) -> None:
    code = 1
    try:
        os.close(report_r)
        os.close(go_w)
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            _tracer(body, keep, output_fd, report_w, go_r)
        os.write(report_w, f"pid {grandchild}\n".encode())
        code = 0
    finally:
        os._exit(code)


def _tracer(  # pragma: no cover - runs in the forked grandchild
    body: Callable[[Channel], int], keep: Collection[int], output_fd: int | None, report_w: int, go_r: int
) -> None:
    code = 1
    try:
        os.chdir("/")
        os.umask(0o022)
        clean_signals()
        _set_name(TRACER_NAME)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        target = output_fd if output_fd is not None else null
        os.dup2(target, 1)
        os.dup2(target, 2)
        os.set_inheritable(report_w, False)
        keep_all = {0, 1, 2, report_w, go_r, *keep}
        _close_all_but(keep_all)
        channel = Channel(report_w, go_r)
        try:
            code = body(channel)
        except Exception as exc:
            # A bug: say so on the handshake if it is still open, and leave the traceback in the log
            # (this process's stderr).
            channel.error(f"internal error in the tracer ({type(exc).__name__}: {exc})")
            import traceback

            traceback.print_exc()
            code = 1
    except BaseException:
        code = 1
    finally:
        os._exit(code)


# Kept ignored: SIGHUP (the session the tracer leaves behind may hang up), SIGPIPE (Python's own
# choice, so that writing to a closed pipe is an EPIPE error rather than death).
KEPT_IGNORED = frozenset({signal.SIGHUP, signal.SIGPIPE})


def clean_signals() -> None:
    """No signal blocked, every disposition the default (but KEPT_IGNORED): what a process started
    by a service manager gets. crun runs hooks with almost every signal blocked
    (SigBlk fffffffe7ffbfeff), and both the mask and ignored dispositions survive fork and exec: a
    tracer that inherited them would never see the SIGTERM that tells it to stop."""
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        wanted = signal.SIG_IGN if signum in KEPT_IGNORED else signal.SIG_DFL
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, wanted)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _close_all_but(keep: set[int]) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_name(name: bytes) -> None:
    """PR_SET_NAME, so that ps shows what this process is."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)
