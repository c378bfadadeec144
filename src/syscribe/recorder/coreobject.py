"""The default recorder: the precompiled CO-RE object (bpf/recorder.bpf.o) loaded through libbpf.

Needs a kernel with BTF and libbpf.so.1; no clang, headers or bcc. The container-start hook imports
this module, so it stays lean: stdlib, ctypes and syscribe's own small modules only.

The pure helpers (config_bytes, sum_per_cpu, decode_*) mirror the layout of recorder.bpf.c; the
object's map sizes are checked against them at load time.
"""

from __future__ import annotations

import os
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources

from syscribe import arch as archmod
from syscribe.arch import Arch
from syscribe.recorder import libbpf
from syscribe.recorder.base import RecorderError, Recording, Target

OBJECT_RESOURCE = "recorder.bpf.o"
# libbpf names the object's internal maps after it (e.g. "syscribe.rodata"); at most 8 characters
# of it are used.
OBJECT_NAME = "syscribe"
# The object's programs, best first: the first reads the task through a BTF pointer (kernel 5.11+),
# the second through bpf_probe_read_kernel (any kernel with BTF). Both count the same way.
PROGRAMS = ("count_syscall", "count_syscall_probe_read")
TRACEPOINT = "the raw_syscalls/sys_enter tracepoint"

# Mirrors of recorder.bpf.c.
NR_SLOTS = 1024
NR_KINDS = 3  # native, i386, x32
COUNTERS_WORDS = NR_KINDS * NR_SLOTS + 1  # + lost
COUNTERS_SIZE = COUNTERS_WORDS * 8
EXTRA_KEY = struct.Struct("=QII")  # nr, kind, phase
CONFIG = struct.Struct("=II")  # target_mnt_ns, compat_mode
ANCHOR_CONFIG = struct.Struct("=II")  # anchor_mode, anchor_nr (after CONFIG in .rodata)
COMPAT_NONE = 0
COMPAT_X86 = 1
ANCHOR_NONE = 0
ANCHOR_SYSCALL = 1
PHASE_COUNTED = 0
PHASE_BEFORE = 1
U32_MAX = 0xFFFFFFFF


def compat_mode_for(native: Arch) -> int:
    return COMPAT_X86 if native is archmod.X86_64 else COMPAT_NONE


def kinds_for(native: Arch) -> tuple[Arch, Arch, Arch]:
    """The architecture each counter table stands for. Without compat detection only the native
    table is ever written, so the others never show up."""
    if native is archmod.X86_64:
        return (native, archmod.I386, archmod.X32)
    return (native, native, native)


def config_bytes(mnt_ns: int, compat_mode: int) -> bytes:
    """The object's .rodata for a target mount namespace inode."""
    if not 0 < mnt_ns <= U32_MAX:
        raise RecorderError(f"mount namespace inode {mnt_ns} is out of range (1..{U32_MAX})")
    if compat_mode not in (COMPAT_NONE, COMPAT_X86):
        raise RecorderError(f"unknown compat mode {compat_mode}")
    return CONFIG.pack(mnt_ns, compat_mode)


def rodata_bytes(mnt_ns: int, compat_mode: int, anchor_nr: int | None = None) -> bytes:
    """The object's whole .rodata: the target and, when `anchor_nr` is given, the anchor syscall (a
    native number) before whose first call everything is counted apart (CoreTracer.snapshot_before)."""
    if anchor_nr is None:
        anchor = ANCHOR_CONFIG.pack(ANCHOR_NONE, 0)
    elif isinstance(anchor_nr, bool) or not 0 <= anchor_nr < NR_SLOTS:
        raise RecorderError(f"anchor syscall number {anchor_nr} is out of range (0..{NR_SLOTS - 1})")
    else:
        anchor = ANCHOR_CONFIG.pack(ANCHOR_SYSCALL, anchor_nr)
    return config_bytes(mnt_ns, compat_mode) + anchor


def sum_per_cpu(raw: bytes, ncpu: int, value_size: int) -> list[int]:
    """Add up the per-CPU copies of a per-CPU map value of u64 words (each copy 8-byte aligned)."""
    stride = (value_size + 7) // 8 * 8
    if ncpu <= 0 or len(raw) != stride * ncpu or value_size % 8:
        raise RecorderError(f"per-CPU value of {len(raw)} bytes does not hold {ncpu} x {value_size} bytes")
    words = value_size // 8
    view = memoryview(raw).cast("Q")
    step = stride // 8
    copies = [view[c * step : c * step + words] for c in range(ncpu)]
    return [sum(col) for col in zip(*copies, strict=True)]


def decode_counters(
    totals: Sequence[int], kinds: tuple[Arch, Arch, Arch]
) -> tuple[dict[tuple[Arch, int], int], int]:
    """Counts per (arch, number) and the number of calls that could not be counted."""
    if len(totals) != COUNTERS_WORDS:
        raise RecorderError(f"counter block has {len(totals)} words, expected {COUNTERS_WORDS}")
    counts: dict[tuple[Arch, int], int] = {}
    for kind in range(NR_KINDS):
        base = kind * NR_SLOTS
        for nr in range(NR_SLOTS):
            n = totals[base + nr]
            if n:
                key = (kinds[kind], nr)
                counts[key] = counts.get(key, 0) + n
    return counts, totals[-1]


def decode_extra(key: bytes, total: int, kinds: tuple[Arch, Arch, Arch]) -> tuple[tuple[Arch, int], int]:
    """One entry of the overflow map. The kernel passes the number as a signed long, so keep its
    sign (a program may call syscall(-1))."""
    nr, kind, _phase = EXTRA_KEY.unpack(key)
    if kind >= NR_KINDS:
        raise RecorderError(f"overflow map holds unknown kind {kind}")
    if nr >= 1 << 63:
        nr -= 1 << 64
    return (kinds[kind], nr), total


def extra_phase(key: bytes) -> int:
    """Whether an overflow entry was counted before the anchor (PHASE_BEFORE) or not."""
    return int(EXTRA_KEY.unpack(key)[2])


def merge_counts(into: dict[tuple[Arch, int], int], items: Iterable[tuple[tuple[Arch, int], int]]) -> None:
    for key, n in items:
        if n:
            into[key] = into.get(key, 0) + n


def load_object_bytes() -> bytes:
    try:
        return resources.files("syscribe.bpf").joinpath(OBJECT_RESOURCE).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise RecorderError(f"the compiled eBPF object is missing ({exc}); reinstall syscribe") from None


def check_kernel() -> None:
    """Raise RecorderError naming what this backend lacks here (cheap checks, before loading)."""
    if not libbpf.VMLINUX_BTF.exists():
        raise RecorderError(
            "kernel has no BTF (/sys/kernel/btf/vmlinux), which the core backend needs; "
            "use --backend bcc (apt-get install python3-bpfcc) or a kernel built with CONFIG_DEBUG_INFO_BTF"
        )
    if os.geteuid() != 0:
        raise RecorderError("recording syscalls with eBPF needs root; run as root (e.g. sudo)")
    libbpf.lib()


class CoreTracer:
    """Counts the syscalls of every task in the target's mount namespace."""

    name = "core"

    def __init__(
        self,
        native: Arch | None = None,
        object_bytes: bytes | None = None,
        program: str | None = None,
        anchor: int | None = None,
    ) -> None:
        """`anchor`: a native syscall number; calls before its first call are kept out of snapshot()
        and reported by snapshot_before() (the container hook's "runtime init ends here")."""
        if program is not None and program not in PROGRAMS:
            raise RecorderError(f"unknown eBPF program {program!r}; one of {', '.join(PROGRAMS)}")
        self._anchor = anchor
        self._native = native or archmod.from_machine(os.uname().machine)
        self._kinds = kinds_for(self._native)
        self._object_bytes = object_bytes
        self._programs = PROGRAMS if program is None else (program,)
        self.program: str | None = None  # the one loaded
        self._obj: libbpf.BpfObject | None = None
        self._attach_seconds = 0.0
        self._ncpu = 0

    def attach(self, target: Target) -> None:
        if self._obj is not None:
            raise RecorderError("this tracer is already attached; make a new one per workload")
        start = time.monotonic()
        check_kernel()
        config = rodata_bytes(target.mnt_ns, compat_mode_for(self._native), self._anchor)
        data = self._object_bytes if self._object_bytes is not None else load_object_bytes()
        for i, program in enumerate(self._programs):
            try:
                self._obj = self._load(data, config, program)
            except RecorderError:
                # A kernel older than the best program's helpers refuses it; the next one may do.
                if i == len(self._programs) - 1:
                    raise
                continue
            self.program = program
            break
        self._ncpu = libbpf.possible_cpus()
        self._attach_seconds = time.monotonic() - start

    def _load(self, data: bytes, config: bytes, program: str) -> libbpf.BpfObject:
        obj = libbpf.BpfObject(data, OBJECT_NAME)
        try:
            for name in PROGRAMS:
                obj.set_autoload(name, name == program)
            obj.set_rodata(config)
            for name in ("counts", "before"):
                size = obj.value_size(obj.map(name))
                if size != COUNTERS_SIZE:
                    raise RecorderError(
                        f"the eBPF object's {name} counters are {size} bytes, expected "
                        f"{COUNTERS_SIZE}: object and code disagree; reinstall syscribe"
                    )
            if obj.key_size(obj.map("extra")) != EXTRA_KEY.size:
                raise RecorderError(
                    "the eBPF object's overflow map has an unexpected key; reinstall syscribe"
                )
            obj.load()
            obj.attach(program, TRACEPOINT)
        except BaseException:
            obj.close()
            raise
        return obj

    def snapshot(self) -> Recording:
        """Everything counted so far; with an anchor, only what came from its first call on."""
        return self._read("counts", PHASE_COUNTED)

    def snapshot_before(self) -> Recording:
        """With an anchor: the calls made before its first call (empty without an anchor)."""
        return self._read("before", PHASE_BEFORE)

    def anchored(self) -> bool:
        """Whether the anchor syscall has been seen (False without an anchor)."""
        obj = self._obj
        if obj is None:
            raise RecorderError("the tracer is not attached")
        if self._anchor is None:
            return False
        raw = obj.lookup(obj.map(".bss"), struct.pack("=I", 0), obj.value_size(obj.map(".bss")))
        return raw is not None and struct.unpack_from("=I", raw)[0] != 0

    def _read(self, map_name: str, phase: int) -> Recording:
        obj = self._obj
        if obj is None:
            raise RecorderError("the tracer is not attached")
        counts_map = obj.map(map_name)
        raw = obj.lookup(counts_map, struct.pack("=I", 0), self._ncpu * COUNTERS_SIZE)
        if raw is None:
            raise RecorderError("the eBPF counter map has no element 0")
        counts, lost = decode_counters(sum_per_cpu(raw, self._ncpu, COUNTERS_SIZE), self._kinds)
        extra = obj.map("extra")
        for key in list(obj.keys(extra)):
            if extra_phase(key) != phase:
                continue
            value = obj.lookup(extra, key, self._ncpu * 8)
            if value is not None:
                merge_counts(counts, [decode_extra(key, sum_per_cpu(value, self._ncpu, 8)[0], self._kinds)])
        rec = Recording(backend=self.name, attach_seconds=self._attach_seconds)
        rec.counts = defaultdict(int, counts)
        if lost:
            rec.warnings.append(
                f"{lost} syscalls could not be counted (overflow map full); the profile may lack some"
            )
        return rec

    def close(self) -> None:
        if self._obj is not None:
            self._obj.close()
            self._obj = None
