"""The fallback recorder: the same counting, compiled at attach time by bcc.

bcc compiles against the kernel headers on disk, which need not match the running kernel (Debian 12
pairs 6.1 headers with whatever kernel it boots). A struct read by header offsets can then read
garbage: reading task->nsproxy->mnt_ns this way reads 0 for every task on a 6.18 kernel, and a
mount-namespace filter silently matches the whole host. So this program reads no kernel struct by
header offsets. It selects tasks with bpf_get_ns_current_pid_tgid(dev, ino), which compares the
task's pid namespace inside the kernel; and it tells 32-bit syscalls apart only with an offset taken
from the running kernel's BTF, or not at all (and says so).
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from syscribe import arch as archmod
from syscribe.arch import Arch
from syscribe.recorder import coreobject, libbpf
from syscribe.recorder.base import RecorderError, Recording, Target

NO_OFFSET = -1

# Same layout as bpf/recorder.bpf.c, so core's decoders read both.
PROGRAM = r"""
#define NR_SLOTS 1024
#define NR_KINDS 3
#define X86_TS_COMPAT 0x0002
#define X32_SYSCALL_BIT 0x40000000ULL

struct counters {
    u64 calls[NR_KINDS][NR_SLOTS];
    u64 lost;
};

struct extra_key {
    u64 nr;
    u32 kind;
    u32 pad;
};

BPF_PERCPU_ARRAY(counts, struct counters, 1);
BPF_PERCPU_HASH(extra, struct extra_key, u64, 4096);

static __always_inline void count_extra(struct counters *c, u32 kind, u64 nr)
{
    struct extra_key key = {};
    u64 one = 1;
    key.nr = nr;
    key.kind = kind;
    u64 *v = extra.lookup(&key);
    if (v) {
        *v += 1;
        return;
    }
    if (extra.insert(&key, &one) == 0)
        return;
    /* Another CPU may have created the key between our lookup and insert. */
    v = extra.lookup(&key);
    if (v)
        *v += 1;
    else
        c->lost += 1;
}

/* raw_syscalls:sys_enter attached raw (args: struct pt_regs *, long id), as the core backend does. */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    struct bpf_pidns_info ns = {};

    /* Compared inside the kernel: no struct offsets from the (possibly mismatched) headers. */
    if (bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)) != 0)
        return 0;

    long id = (long)ctx->args[1];  /* a sign-extended int: negative numbers are never x32 calls */
    u64 nr = (u64)id;
    u32 kind = 0;
#if COMPAT_X86
#if TI_STATUS_OFFSET >= 0
    u32 status = 0;
    /* The offset comes from the running kernel's BTF, not from the headers. */
    bpf_probe_read_kernel(&status, sizeof(status), (void *)(bpf_get_current_task() + TI_STATUS_OFFSET));
    if (status & X86_TS_COMPAT) {
        kind = 1;
    } else
#endif
    if (id >= 0 && (nr & X32_SYSCALL_BIT)) {
        kind = 2;
        nr &= ~X32_SYSCALL_BIT;
    }
#endif

    u32 zero = 0;
    struct counters *c = counts.lookup(&zero);
    if (!c)
        return 0;
    if (nr < NR_SLOTS)
        c->calls[kind][nr] += 1;
    else
        count_extra(c, kind, nr);
    return 0;
}
"""


def check_bcc() -> None:
    """Raise RecorderError naming what bcc lacks here."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise RecorderError(
            "bcc is not importable: apt-get install python3-bpfcc, and run from Debian's python3 "
            "(a venv needs --system-site-packages)"
        ) from None
    kdir = Path(f"/lib/modules/{os.uname().release}")
    if not (kdir / "build").exists():
        raise RecorderError(
            f"bcc needs kernel headers at {kdir / 'build'}: apt-get install linux-headers-amd64 and "
            "link them there (make setup does it)"
        )
    # Debian splits headers into an arch part (build) and a common part (source); bcc compiles from
    # both and fails with a cryptic clang error when `source` does not hold include/linux.
    kconfig = "include/linux/kconfig.h"
    if not ((kdir / "build" / kconfig).exists() or (kdir / "source" / kconfig).exists()):
        raise RecorderError(
            f"kernel headers at {kdir} are incomplete (no {kconfig}); link {kdir / 'source'} to "
            "Debian's /usr/src/linux-headers-<version>-common"
        )
    if os.geteuid() != 0:
        raise RecorderError("recording syscalls with eBPF needs root; run as root (e.g. sudo)")


def kernel_dev(st_dev: int) -> int:
    """A userspace dev_t (stat's st_dev) in the kernel's internal encoding, which the
    bpf_get_ns_current_pid_tgid helper compares against."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def status_offset(btf_path: Path | None) -> int:
    """Offset of thread_info.status in task_struct from the running kernel's BTF, or NO_OFFSET."""
    if btf_path is None or not btf_path.exists():
        return NO_OFFSET
    try:
        offset = libbpf.member_offset("task_struct", "thread_info.status", btf_path)
    except RecorderError:
        return NO_OFFSET
    return NO_OFFSET if offset is None else offset


def cflags(target: Target, compat_x86: bool, ti_status_offset: int) -> list[str]:
    if not (0 <= target.pid_ns_dev < 1 << 64 and 0 < target.pid_ns_ino < 1 << 64):
        raise RecorderError(f"pid namespace {target.pid_ns_dev}:{target.pid_ns_ino} is out of range")
    return [
        f"-DPIDNS_DEV={kernel_dev(target.pid_ns_dev)}ULL",
        f"-DPIDNS_INO={target.pid_ns_ino}ULL",
        f"-DCOMPAT_X86={int(compat_x86)}",
        f"-DTI_STATUS_OFFSET={ti_status_offset}",
    ]


class BccTracer:
    """Counts the syscalls of every task in the target's pid namespace, compiled by bcc."""

    name = "bcc"

    def __init__(self, native: Arch | None = None, btf_path: Path | None = libbpf.VMLINUX_BTF) -> None:
        self._native = native or archmod.from_machine(os.uname().machine)
        self._kinds = coreobject.kinds_for(self._native)
        self._btf_path = btf_path
        self._bpf: Any = None
        self._attach_seconds = 0.0
        self._warnings: list[str] = []
        self._ncpu = 0

    def attach(self, target: Target) -> None:
        if self._bpf is not None:
            raise RecorderError("this tracer is already attached; make a new one per workload")
        start = time.monotonic()
        check_bcc()
        from bcc import BPF

        compat_x86 = self._native is archmod.X86_64
        offset = status_offset(self._btf_path) if compat_x86 else NO_OFFSET
        if compat_x86 and offset == NO_OFFSET:
            self._warnings.append(
                "the bcc backend cannot tell 32-bit (i386) syscalls from 64-bit ones without the "
                "kernel's BTF; if the workload runs 32-bit code, record with the core backend"
            )
        try:
            self._bpf = BPF(text=PROGRAM.encode(), cflags=cflags(target, compat_x86, offset))
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            raise RecorderError(
                f"bcc could not compile or load the recorder ({exc}); check the kernel headers "
                "(make setup) or use --backend core"
            ) from None
        self._ncpu = len(_possible_cpus())
        self._attach_seconds = time.monotonic() - start

    def snapshot(self) -> Recording:
        if self._bpf is None:
            raise RecorderError("the tracer is not attached")
        from bcc import libbcc

        lib = libbcc.lib
        counts_fd = self._bpf[b"counts"].map_fd
        raw = _lookup(lib, counts_fd, struct.pack("=I", 0), self._ncpu * coreobject.COUNTERS_SIZE)
        if raw is None:
            raise RecorderError("the eBPF counter map has no element 0")
        counts, lost = coreobject.decode_counters(
            coreobject.sum_per_cpu(raw, self._ncpu, coreobject.COUNTERS_SIZE), self._kinds
        )
        extra_fd = self._bpf[b"extra"].map_fd
        for key in _keys(lib, extra_fd, coreobject.EXTRA_KEY.size):
            value = _lookup(lib, extra_fd, key, self._ncpu * 8)
            if value is not None:
                total = coreobject.sum_per_cpu(value, self._ncpu, 8)[0]
                coreobject.merge_counts(counts, [coreobject.decode_extra(key, total, self._kinds)])
        rec = Recording(backend=self.name, attach_seconds=self._attach_seconds)
        rec.counts = defaultdict(int, counts)
        rec.warnings.extend(self._warnings)
        if lost:
            rec.warnings.append(
                f"{lost} syscalls could not be counted (overflow map full); the profile may lack some"
            )
        return rec

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def _possible_cpus() -> list[int]:
    from bcc.utils import get_possible_cpus

    cpus: list[int] = get_possible_cpus()
    return cpus


def _lookup(lib: Any, fd: int, key: bytes, size: int) -> bytes | None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(size)
    if lib.bpf_lookup_elem(fd, kbuf, vbuf) != 0:
        return None
    return vbuf.raw


def _keys(lib: Any, fd: int, key_size: int) -> list[bytes]:
    keys: list[bytes] = []
    cur = None
    nxt = ctypes.create_string_buffer(key_size)
    while lib.bpf_get_next_key(fd, cur, nxt) == 0:
        keys.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)
    return keys
