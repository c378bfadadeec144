"""Checks for what real-system tests need. Each returns None when the need holds, else what is missing
and how to get it (the same words `syscribe doctor` would say)."""

from __future__ import annotations

import ctypes.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _root() -> str | None:
    return None if os.geteuid() == 0 else "run as root"


def _btf() -> str | None:
    return None if Path("/sys/kernel/btf/vmlinux").exists() else "kernel has no BTF (/sys/kernel/btf/vmlinux)"


def _tracefs() -> str | None:
    if Path("/sys/kernel/tracing/events/raw_syscalls").exists():
        return None
    return "tracefs not mounted: mount -t tracefs tracefs /sys/kernel/tracing (make setup does it)"


def _library(name: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if ctypes.util.find_library(name) else f"lib{name} missing: apt-get install {package}"

    return check


def _program(name: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if shutil.which(name) else f"{name} not on PATH: apt-get install {package}"

    return check


def _bcc() -> str | None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc not importable: apt-get install python3-bpfcc and use a venv with --system-site-packages"
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        return f"no kernel headers at {build}: make setup links Debian's linux-headers there"
    return None


def _kube() -> str | None:
    """kube-apiserver and etcd, built by scripts/build-kube.sh (tests/support/kubeapi.py runs them)."""
    from tests.support.kubeapi import missing

    return missing()


def _ebpf() -> str | None:
    return _root() or _btf() or _tracefs() or _library("bpf", "libbpf1")()


CHECKS: dict[str, Callable[[], str | None]] = {
    "root": _root,
    "btf": _btf,
    "tracefs": _tracefs,
    "ebpf": _ebpf,
    "libbpf": _library("bpf", "libbpf1"),
    "libseccomp": _library("seccomp", "libseccomp2"),
    "bcc": _bcc,
    "clang": _program("clang-14", "clang-14"),
    "runc": _program("runc", "runc"),
    "crun": _program("crun", "crun"),
    "podman": _program("podman", "podman"),
    "busybox": lambda: None if Path("/bin/busybox").exists() else "apt-get install busybox-static",
    "auditd": _program("auditd", "auditd"),
    "auditctl": _program("auditctl", "auditd"),
    "ausearch": _program("ausearch", "auditd"),
    "rsyslogd": _program("rsyslogd", "rsyslog"),
    "openssl": _program("openssl", "openssl"),
    "kube": _kube,
    "setpriv": _program("setpriv", "util-linux"),
}


def check(need: str) -> str | None:
    try:
        probe = CHECKS[need]
    except KeyError:
        raise ValueError(f"unknown prerequisite {need!r}; known: {', '.join(sorted(CHECKS))}") from None
    return probe()


REQUIRE_REAL = os.environ.get("SYSCRIBE_REQUIRE_REAL") == "1"


def require(*needs: str) -> None:
    """Skip the calling test unless every named prerequisite holds; under SYSCRIBE_REQUIRE_REAL=1, fail.

    Without the variable (a laptop without root) a missing prerequisite skips with its reason; with it
    (CI, `make test` on a node) the same test fails, so nothing real is skipped unseen.
    """
    import pytest

    for need in needs:
        problem = check(need)
        if problem is None:
            continue
        message = f"needs {need}: {problem}"
        if REQUIRE_REAL:
            pytest.fail(message + " (SYSCRIBE_REQUIRE_REAL=1 makes this a failure)", pytrace=False)
        pytest.skip(message)
