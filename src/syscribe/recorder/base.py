"""What every recorder backend offers, and the target it records."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from syscribe.arch import Arch


class RecorderError(RuntimeError):
    """A backend cannot run here; the message says what to install, mount or enable."""


@dataclass(frozen=True, slots=True)
class Target:
    """The namespaces of the workload's first process; everything that shares them is recorded."""

    pid: int
    mnt_ns: int  # inode of /proc/<pid>/ns/mnt
    pid_ns_dev: int  # st_dev and st_ino of /proc/<pid>/ns/pid
    pid_ns_ino: int

    @classmethod
    def of_pid(cls, pid: int) -> Target:
        mnt = os.stat(f"/proc/{pid}/ns/mnt")
        pidns = os.stat(f"/proc/{pid}/ns/pid")
        return cls(pid=pid, mnt_ns=mnt.st_ino, pid_ns_dev=pidns.st_dev, pid_ns_ino=pidns.st_ino)


@dataclass(slots=True)
class Recording:
    """Calls per (architecture, syscall number) of the recorded tasks."""

    backend: str
    counts: dict[tuple[Arch, int], int] = field(default_factory=lambda: defaultdict(int))
    attach_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


class Tracer(Protocol):
    name: str

    def attach(self, target: Target) -> None:
        """Load and attach; return only once syscalls of `target` are being counted."""

    def snapshot(self) -> Recording:
        """Everything counted so far (may be called more than once)."""

    def close(self) -> None:
        """Detach and free the kernel objects. Idempotent."""
