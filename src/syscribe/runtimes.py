"""The syscalls an OCI runtime itself makes after it has loaded a container's seccomp filter.

A filter applies from the moment the runtime loads it, so a profile recorded from the workload alone
must also allow what the runtime still does between loading it and exec'ing the workload, or the
container cannot start. Syscalls the runtime makes before loading the filter need not be allowed.

The lists were measured on this project's machines (Debian 12: runc 1.1.5, crun 1.8.1): a busybox
container run 40 times under each runtime with `defaultAction: SCMP_ACT_LOG`, every SECCOMP audit
record read from the audit netlink group, and the workload's own records removed.
tests/test_runtime_tail.py measures them again and fails when a runtime needs one not listed here.
"""

from __future__ import annotations

RUNC_MEASURED = frozenset(
    {
        "close",
        "epoll_ctl",
        "fstatfs",
        "futex",
        "getdents64",
        "getpid",
        "openat",
        "rt_sigreturn",
        "write",
    }
)

# runc is a Go program and its filter covers every thread of runc init (TSYNC). Go's runtime can make
# these on any thread at any moment (scheduling, preemption signals, stack and heap growth), so a quiet
# measurement may not show them but a loaded node will.
GO_RUNTIME = frozenset(
    {
        "clone",
        "epoll_pwait",
        "exit",
        "futex",
        "getpid",
        "gettid",
        "madvise",
        "mmap",
        "munmap",
        "nanosleep",
        "read",
        "rt_sigprocmask",
        "rt_sigreturn",
        "sched_yield",
        "sigaltstack",
        "tgkill",
    }
)

CRUN_MEASURED = frozenset({"close"})

AFTER_FILTER: dict[str, frozenset[str]] = {
    "runc": RUNC_MEASURED | GO_RUNTIME,
    "crun": CRUN_MEASURED,
}


def after_filter(runtime: str) -> frozenset[str]:
    """What `runtime` needs allowed after loading the filter, for a profile to let a container start."""
    try:
        return AFTER_FILTER[runtime]
    except KeyError:
        known = ", ".join(sorted(AFTER_FILTER))
        raise ValueError(f"unknown runtime {runtime!r} (no measured syscall list); known: {known}") from None
