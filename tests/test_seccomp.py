"""Enforcement for real: profiles loaded into the kernel by syscribe.seccomp (libseccomp through
ctypes), by `syscribe run`, and by runc and crun in a busybox container."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

from syscribe import arch, bundle, profilemerge, seccomp
from syscribe import ociprofile as prof
from syscribe.ociprofile import Profile
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")
# What `busybox mkdir DIR` calls on this machine (Debian 12's busybox-static), plus write so that a
# denied command can say why.
BUSYBOX_MKDIR = [
    "arch_prctl",
    "brk",
    "execve",
    "exit_group",
    "getrandom",
    "getuid",
    "mkdir",
    "mprotect",
    "prctl",
    "prlimit64",
    "readlink",
    "rseq",
    "set_robust_list",
    "set_tid_address",
    "write",
]
SYS_UMASK = 95  # x86_64


def allow(names: Iterable[str]) -> Profile:
    return prof.from_names(names, arch.X86_64)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSCRIBE, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


# --- the filter itself ------------------------------------------------------------------------------


def _in_child(profile: Profile, calls: list[tuple[int, int]]) -> list[tuple[int, int]] | int:
    """Load `profile` in a forked child, make raw syscalls, return (result, errno) of each, or the
    child's signal number when it was killed."""
    filt = seccomp.build(profile)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            filt.load()
            out = []
            for nr, arg in calls:
                res = libc.syscall(nr, ctypes.c_long(arg))
                out.append(f"{res},{ctypes.get_errno() if res < 0 else 0}")
            os.write(w, ";".join(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    filt.release()
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    return [(int(a), int(b)) for a, b in (item.split(",") for item in data.split(";"))]


# What Python needs to make the calls and report them from the child.
CHILD_BASE = [
    "write",
    "exit_group",
    "exit",
    "rt_sigreturn",
    "brk",
    "mmap",
    "munmap",
    "futex",
    "close",
    "getpid",
]


def test_argument_filters_and_errno_values_reach_the_kernel() -> None:
    require("root", "libseccomp")
    p = prof.parse(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": errno.ENOSYS,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": CHILD_BASE, "action": "SCMP_ACT_ALLOW"},
                {
                    "names": ["umask"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 0o22, "op": "SCMP_CMP_EQ"}],
                },
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            ],
        }
    )
    results = _in_child(p, [(SYS_UMASK, 0o22), (SYS_UMASK, 0o77), (110, 0), (39, 0)])
    assert isinstance(results, list)
    (ok, ok_err), (denied, denied_err), (ppid, ppid_err), (getpid, _) = results
    assert ok >= 0 and ok_err == 0  # umask(022) allowed by the argument filter
    assert (denied, denied_err) == (-1, errno.ENOSYS)  # umask(077) falls to the default: defaultErrnoRet
    assert (ppid, ppid_err) == (-1, errno.EACCES)  # a rule's errnoRet
    assert getpid > 0 and getpid != os.getpid()  # allowed: the forked child's own pid


def test_kill_process_default_kills_with_sigsys() -> None:
    require("root", "libseccomp")
    p = prof.parse(
        {
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [{"names": CHILD_BASE, "action": "SCMP_ACT_ALLOW"}],
        }
    )
    assert _in_child(p, [(SYS_UMASK, 0o22)]) == 31  # SIGSYS


def test_names_unknown_everywhere_are_reported_not_fatal() -> None:
    require("libseccomp")
    filt = seccomp.build(allow(["read", "no_such_syscall"]), no_new_privs=True)
    try:
        assert filt.rules == 1
        assert len(filt.warnings) == 1 and "no_such_syscall" in filt.warnings[0]
    finally:
        filt.release()
    # Known to libseccomp but not on x86: reported for a filter of x86 arches only.
    only_x86 = prof.parse(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["arm_fadvise64_64", "read"], "action": "SCMP_ACT_ALLOW"}],
        }
    )
    filt = seccomp.build(only_x86, no_new_privs=True)
    try:
        assert any("arm_fadvise64_64" in w for w in filt.warnings)
    finally:
        filt.release()


def test_what_cannot_be_enforced_is_refused_up_front() -> None:
    require("libseccomp")
    notify = prof.parse({"defaultAction": "SCMP_ACT_NOTIFY"})
    with pytest.raises(seccomp.SeccompError, match="seccomp agent"):
        seccomp.build(notify)
    if seccomp.arch_token("SCMP_ARCH_LOONGARCH64") == 0:  # libseccomp < 2.6
        newer = prof.parse({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_LOONGARCH64"]})
        with pytest.raises(seccomp.SeccompError, match="does not know architecture SCMP_ARCH_LOONGARCH64"):
            seccomp.build(newer)


def test_flags_become_filter_attributes() -> None:
    require("libseccomp")
    for flag in ("SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"):
        filt = seccomp.build(
            prof.parse({"defaultAction": "SCMP_ACT_ERRNO", "flags": [flag]}), no_new_privs=True
        )
        filt.release()
    if seccomp.version().startswith("2.5."):  # WAIT_KILLABLE_RECV arrived in libseccomp 2.6
        wait = prof.parse(
            {"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}
        )
        with pytest.raises(seccomp.SeccompError, match="cannot set SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"):
            seccomp.build(wait)


def test_rules_equal_to_the_default_are_skipped_like_runc() -> None:
    require("libseccomp")
    p = prof.parse(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            ],
        }
    )
    filt = seccomp.build(p, no_new_privs=True)
    try:
        assert filt.rules == 1
    finally:
        filt.release()


# --- syscribe run -------------------------------------------------------------------------------------


def test_run_enforces_a_hand_written_profile(tmp_path: Path) -> None:
    require("root", "libseccomp", "busybox")
    profile = tmp_path / "p.json"
    profile.write_text(prof.dumps(allow(BUSYBOX_MKDIR)))
    made = run_cli("run", "--profile", str(profile), "--", "busybox", "mkdir", str(tmp_path / "d"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "d").is_dir()
    linked = run_cli("run", "--profile", str(profile), "--", "busybox", "ln", "-s", "a", str(tmp_path / "l"))
    assert linked.returncode == 1
    assert "Operation not permitted" in linked.stderr
    assert not (tmp_path / "l").is_symlink()


def test_run_takes_a_seccompprofile_too(tmp_path: Path) -> None:
    require("root", "libseccomp", "busybox")
    from syscribe import seccompprofile as spo

    profile = tmp_path / "p.yaml"
    profile.write_text(spo.dumps(allow(BUSYBOX_MKDIR), "mkdir"))
    made = run_cli("run", "-p", str(profile), "--", "busybox", "mkdir", str(tmp_path / "d"))
    assert made.returncode == 0, made.stderr
    linked = run_cli("run", "-p", str(profile), "--", "busybox", "ln", "-s", "a", str(tmp_path / "l"))
    assert linked.returncode == 1 and "Operation not permitted" in linked.stderr


def test_run_reports_a_profile_without_execve(tmp_path: Path) -> None:
    require("root", "libseccomp", "busybox")
    profile = tmp_path / "p.json"
    profile.write_text(prof.dumps(allow(["write", "exit_group"])))
    result = run_cli("run", "--profile", str(profile), "--", "busybox", "true")
    assert result.returncode == 126
    assert result.stderr.strip().splitlines() == [
        "syscribe: cannot run busybox: Operation not permitted (does the profile allow execve?)"
    ]


def test_run_passes_on_the_exit_status_and_signals(tmp_path: Path) -> None:
    require("root", "libseccomp", "busybox")
    profile = tmp_path / "p.json"
    loose = prof.parse(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["symlink"], "action": "SCMP_ACT_ERRNO"}]}
    )
    profile.write_text(prof.dumps(loose))
    assert run_cli("run", "-p", str(profile), "--", "busybox", "sh", "-c", "exit 7").returncode == 7
    assert (
        run_cli("run", "-p", str(profile), "--", "busybox", "sh", "-c", "kill -TERM $$").returncode
        == 128 + 15
    )
    killer = tmp_path / "k.json"
    killer.write_text(
        prof.dumps(
            prof.parse(
                {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS"}],
                }
            )
        )
    )
    result = run_cli("run", "-p", str(killer), "--", "busybox", "mkdir", str(tmp_path / "x"))
    assert result.returncode == 128 + 31  # SIGSYS


# --- in a container ------------------------------------------------------------------------------------


def _container(
    rootfs: Path, tmp_path: Path, runtime: str, profile: Profile, args: list[str]
) -> subprocess.CompletedProcess[str]:
    name = f"syscribe-test-{uuid.uuid4().hex[:12]}"
    b = bundle.make_bundle(
        tmp_path / f"bundle-{name}", rootfs, args, seccomp=prof.to_dict(profile), runtime=runtime
    )
    try:
        return bundle.run_container(b, name, runtime=runtime)
    finally:
        subprocess.run([runtime, "delete", "--force", name], capture_output=True, check=False)


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_a_runtime_enforces_the_profile_with_its_own_syscalls(
    busybox_rootfs: Path, tmp_path: Path, runtime: str
) -> None:
    require("root", runtime)
    target = f"/tmp/made-{uuid.uuid4().hex[:8]}"
    link = f"/tmp/link-{uuid.uuid4().hex[:8]}"
    profile = profilemerge.for_runtime(allow(BUSYBOX_MKDIR), runtime)
    try:
        made = _container(busybox_rootfs, tmp_path, runtime, profile, ["/bin/busybox", "mkdir", target])
        assert made.returncode == 0, made.stderr
        assert (busybox_rootfs / target.lstrip("/")).is_dir()
        linked = _container(
            busybox_rootfs, tmp_path, runtime, profile, ["/bin/busybox", "ln", "-s", "a", link]
        )
        assert linked.returncode == 1
        assert "Operation not permitted" in linked.stdout + linked.stderr
        assert not (busybox_rootfs / link.lstrip("/")).is_symlink()
    finally:
        subprocess.run(
            ["rm", "-rf", str(busybox_rootfs / target.lstrip("/")), str(busybox_rootfs / link.lstrip("/"))],
            check=False,
        )


def test_runc_needs_its_own_syscalls_after_the_filter(busybox_rootfs: Path, tmp_path: Path) -> None:
    # Why syscribe.runtimes exists: the workload's own syscalls are not enough for runc to start it.
    require("root", "runc")
    target = f"/tmp/made-{uuid.uuid4().hex[:8]}"
    result = _container(
        busybox_rootfs, tmp_path, "runc", allow(BUSYBOX_MKDIR), ["/bin/busybox", "mkdir", target]
    )
    assert result.returncode != 0
    assert not (busybox_rootfs / target.lstrip("/")).exists()
