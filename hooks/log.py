"""One-line log records for the hook and its tracer: to the configured log file and, for the hook
itself, to stderr (which runtimes show when a hook fails, and drop otherwise).

Each record is one write(2) to a file opened O_APPEND, so records of concurrent hooks and tracers do
not interleave. The tracer outlives the hook and has no stderr, so the file is where its outcome goes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

MAX_LINE = 4000
PREFIX = "syscribe-hook"


def printable(text: str) -> str:
    """`text` with control characters escaped, so that one record stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def record(container: str | None, message: str, *, now: float | None = None, pid: int | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now if now is not None else time.time()))
    who = f" container {printable(container)[:80]}" if container else ""
    line = f"{stamp}Z {PREFIX}[{pid if pid is not None else os.getpid()}]{who}: {printable(message)}"
    return line[:MAX_LINE] + "\n"


class HookLog:
    """Where records go. Opening the file may fail (missing directory, a symlink): then records go to
    stderr only, and `problem` says why, for the first record to mention."""

    def __init__(self, path: str | None, *, stderr: bool = True) -> None:
        self.path = path
        self.fd: int | None = None
        self.problem: str | None = None
        self.stderr = stderr
        if path is not None:
            try:
                self.fd = os.open(
                    path,
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                    0o640,
                )
            except OSError as exc:
                self.problem = f"cannot open the log file {path}: {exc.strerror}"

    def for_tracer(self) -> HookLog:
        """A log writing to the same open file and never to stderr: the detached tracer has none."""
        child = HookLog(None, stderr=False)
        child.fd = self.fd
        return child

    def write(self, container: str | None, message: str, *, stderr: bool = True) -> None:
        line = record(container, message)
        if self.fd is not None:
            # A full disk must not fail a container start; stderr still has the record.
            with contextlib.suppress(OSError):
                os.write(self.fd, line.encode("utf-8", "replace"))
        if self.stderr and stderr:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)
                sys.stderr.flush()
        if self.problem is not None:
            problem, self.problem = self.problem, None
            self.write(None, problem)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
