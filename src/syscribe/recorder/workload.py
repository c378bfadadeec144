"""Run a command under a tracer: `syscribe record -- CMD` in one function.

The command becomes pid 1 of a new pid namespace, in a new mount namespace of its own, so that both
backends' filters (mount namespace for core, pid namespace for bcc) select exactly the command and its
descendants, and no process of ours shares either namespace. The tracer is attached between the
child's namespace setup and its exec, over a pipe handshake; after the handshake the child makes one
syscall of its own, execve, which the workload needs anyway.

pid 1 ignores signals it has no handler for, even from its parent; SIGINT and SIGTERM are therefore
forwarded when the command handles them and turned into SIGKILL when it would have died of them, and
the exit status says what a shell would have said.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from syscribe.recorder.base import RecorderError, Recording, Target, Tracer
from syscribe.usercommand import (
    CommandError,
    CommandNotExecutableError,
    CommandNotFoundError,
    resolve_command,
    shell_status,
)

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
SI_KERNEL = 0x80  # si_code of signals the kernel sends, e.g. a terminal's ^C
FORWARDED = (signal.SIGINT, signal.SIGTERM)
_WAIT_SIGNALS = {signal.SIGCHLD, *FORWARDED}
# Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec, so give the command defaults.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM)
_MAX_ERROR_REPORT = 4096


@dataclass
class WorkloadResult:
    exit_status: int
    recording: Recording
    seconds: float


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    return libc


_LIBC = _libc()


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_LIBC.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_LIBC.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    _check(_LIBC.mount(enc(source), enc(target), enc(fstype), flags, None), f"mount {target}")


def _signal_mask(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _disposition(pid: int, sig: int) -> str:
    """"caught", "ignored" or "default", read from /proc (pid 1 ignores what it does not catch)."""
    bit = 1 << (sig - 1)
    if _signal_mask(pid, "SigCgt") & bit:
        return "caught"
    if _signal_mask(pid, "SigIgn") & bit:
        return "ignored"
    return "default"


def _child(path: str, argv: Sequence[str], env: Mapping[str, str], *, ready_w: int, go_r: int,
           old_mask: set[int]) -> None:
    """Runs in the forked child, pid 1 of the new pid namespace. Never returns."""
    stage = "setup"
    try:
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        stage = "unshare mount namespace"
        unshare(CLONE_NEWNS)
        # Nothing mounted in here may reach the host, nor the host's later mounts in here.
        stage = "make mounts private"
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        stage = "mount /proc"
        # A /proc of the new pid namespace, so that the command sees itself as the processes there.
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        stage = "handshake"
        os.write(ready_w, b"R")
        if os.read(go_r, 1) != b"G":
            os._exit(125)  # the parent gave up; run nothing
        stage = "exec"
        os.execve(path, list(argv), dict(env))
    except OSError as exc:
        report = f"{stage}:{exc.errno or 0}:{exc.strerror or exc}".encode(errors="replace")
    except BaseException as exc:  # anything else must not escape the child into the caller's code
        report = f"{stage}:0:{exc!r}".encode(errors="replace")
    try:
        os.write(ready_w, b"E" + report[:_MAX_ERROR_REPORT])
    finally:
        os._exit(127)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
        if sum(map(len, chunks)) > _MAX_ERROR_REPORT + 1:
            break
    return b"".join(chunks)


def _child_error(command: str, report: bytes) -> RecorderError | CommandError:
    stage, _, rest = report.decode(errors="replace").partition(":")
    code, _, text = rest.partition(":")
    err = int(code) if code.isdigit() else 0
    if stage == "exec":
        if err == errno.ENOENT:
            return CommandNotFoundError(command, f" ({text})")
        if err in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.ETXTBSY):
            return CommandNotExecutableError(command, text)
        if err == errno.E2BIG:
            return CommandError(
                f"cannot run {command}: argument list too long (E2BIG); pass fewer or shorter arguments"
            )
        return CommandError(f"cannot run {command}: {text}")
    return RecorderError(f"could not prepare the namespaces for {command} ({stage}: {text}); run as root")


class _Forwarder:
    """Decides what a SIGINT/SIGTERM that reached us does to the workload."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.emulated: int | None = None  # the signal we turned into SIGKILL

    def __call__(self, info: signal.struct_siginfo) -> None:
        sig = info.si_signo
        try:
            same_group = os.getpgid(self.pid) == os.getpgrp()
        except ProcessLookupError:
            return
        # A terminal's ^C reaches the whole foreground group, the workload included: do not send it
        # twice. Otherwise (kill from elsewhere) pass it on.
        delivered = info.si_code == SI_KERNEL and same_group
        what = _disposition(self.pid, sig)
        try:
            if what == "default":
                self.emulated = sig
                os.kill(self.pid, signal.SIGKILL)
            elif what == "caught" and not delivered:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def _wait(pid: int, on_signal: Callable[[signal.struct_siginfo], None]) -> int:
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return status
        # The timeout covers a SIGCHLD that was coalesced with another child's.
        info = signal.sigtimedwait(_WAIT_SIGNALS, 0.5)
        if info is not None and info.si_signo in FORWARDED:
            on_signal(info)


def _fork_in_new_pid_ns(child: Callable[[], None]) -> int:
    """Fork `child` as pid 1 of a new pid namespace; this process stays where it was."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                child()
                os._exit(127)  # not reached: child() never returns
        finally:
            # Only the next child goes into the new namespace; later forks of ours must not.
            setns(own, CLONE_NEWPID)
        return pid
    finally:
        os.close(own)


def _wait_until_blocked(pid: int, tries: int = 4000) -> None:
    """Return once the child sleeps, i.e. waits in read() for the go-ahead: its entry into that read
    must happen before the tracer attaches, or the recording would hold a read the command never made.
    Gives up quietly after a while (a recording with one extra read beats none)."""
    stat = f"/proc/{pid}/stat"
    for _ in range(tries):
        try:
            with open(stat, "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            return
        if state == b"S":
            return
        time.sleep(0.0002)


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def run_traced(argv: Sequence[str], tracer: Tracer, env: Mapping[str, str] | None = None) -> WorkloadResult:
    """Run argv with `tracer` attached to it (the caller closes the tracer)."""
    env = _passable_env(env)
    path = resolve_command(argv, env)
    command = argv[0]
    if os.geteuid() != 0:
        raise RecorderError("recording needs root (new namespaces and eBPF); run as root (e.g. sudo)")
    ready_r, ready_w = os.pipe()  # child -> parent: "R" when ready, "E..." on failure; CLOEXEC
    go_r, go_w = os.pipe()  # parent -> child: "G" once the tracer is attached
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WAIT_SIGNALS)
    pid = 0
    try:
        pid = _start_attached(
            command,
            lambda: _child(path, argv, env, ready_w=ready_w, go_r=go_r, old_mask=old_mask),
            tracer,
            ready_r=ready_r,
            ready_w=ready_w,
            go_r=go_r,
        )
        start = time.monotonic()
        os.write(go_w, b"G")
        os.close(go_w)
        go_w = -1
        report = _read_all(ready_r)  # EOF when the exec succeeded (the pipe is close-on-exec)
        if report:
            _kill_and_reap(pid)
            pid = 0
            raise _child_error(command, report.removeprefix(b"E"))
        forwarder = _Forwarder(pid)
        status = _wait(pid, forwarder)
        pid = 0
        seconds = time.monotonic() - start
        return WorkloadResult(
            exit_status=_exit_status(status, forwarder), recording=tracer.snapshot(), seconds=seconds
        )
    finally:
        if pid:
            _kill_and_reap(pid)
        os.close(ready_r)
        if go_w >= 0:
            os.close(go_w)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _passable_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """`env` (this process's environment when None) as a copy, checked: execve takes no key that is
    empty or holds "=", and no NUL byte anywhere."""
    env = dict(os.environ if env is None else env)
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise RecorderError(f"environment variable {key[:40]!r} cannot be passed to a command")
    return env


def _start_attached(
    command: str, child: Callable[[], None], tracer: Tracer, *, ready_r: int, ready_w: int, go_r: int
) -> int:
    """Fork `child` in its new namespaces, wait until it is ready and blocked on the go-ahead, and
    attach `tracer` to it; its pid. Closes the child's ends of the pipes; kills and reaps the child
    when anything fails."""
    try:
        pid = _fork_in_new_pid_ns(child)
    except OSError as exc:
        raise RecorderError(
            f"cannot start {command} in new namespaces: {exc.strerror or exc}; run as root"
        ) from None
    finally:
        os.close(ready_w)
        os.close(go_r)
    try:
        first = os.read(ready_r, 1)
        if first != b"R":
            died = b"setup:0:the child died before it was ready"
            report = _read_all(ready_r) if first == b"E" else died
            _kill_and_reap(pid)
            pid = 0
            raise _child_error(command, report)
        _wait_until_blocked(pid)
        tracer.attach(Target.of_pid(pid))
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        raise
    return pid


def _exit_status(status: int, forwarder: _Forwarder) -> int:
    """What a shell would say of the command; 128+N when it was killed for a signal N it would have
    died of (pid 1 ignores it, so the forwarder sent SIGKILL instead)."""
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if forwarder.emulated is not None and killed:
        return 128 + forwarder.emulated
    return shell_status(status)


def record_command(argv: Sequence[str], backend: str = "auto") -> WorkloadResult:
    """Record the syscalls of argv and everything it starts, with the named backend."""
    from syscribe.recorder import open_tracer

    env = dict(os.environ)
    resolve_command(argv, env)  # fail on a missing command before paying for a tracer
    tracer = open_tracer(backend)
    try:
        return run_traced(argv, tracer, env)
    finally:
        tracer.close()
