"""The resident recorder's kernel side: one program (bpf/resident.bpf.c) for every recording on the
node, its maps pinned in bpffs so that a restarted recorder finds the recordings in flight.

A recording is a slot: `start` clears the slot's counters, sets its anchor and inserts the mount
namespace into `recordings`; `end` deletes the namespace, reads the slot and clears it. Map access
goes through fds (libbpf's low-level API), so the same code serves a freshly loaded object and maps
picked up from their pins.

The pure helpers (layout, decode_slot) mirror resident.bpf.c; map sizes are checked against them when
the object is loaded and when pinned maps are picked up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from syscribe import arch as archmod
from syscribe.arch import Arch
from syscribe.recorder import libbpf
from syscribe.recorder.base import RecorderError, Recording
from syscribe.recorder.coreobject import COMPAT_X86, compat_mode_for, kinds_for

OBJECT_RESOURCE = "resident.bpf.o"
OBJECT_NAME = "syscres"
PROGRAMS = ("resident_count", "resident_count_probe_read")
TRACEPOINT = "the raw_syscalls/sys_enter tracepoint"
DEFAULT_PIN_DIR = "/sys/fs/bpf/syscribe"
BPFFS = "/sys/fs/bpf"

# Mirrors of resident.bpf.c.
DEFAULT_SLOTS = 1024
MAX_SLOTS = 65536
NR_NUMBERS = 512
NR_KINDS = 3
NR_PHASES = 2
NR_COUNTERS = NR_PHASES * NR_KINDS * NR_NUMBERS
COUNTS_SIZE = NR_COUNTERS * 8
INFO = struct.Struct("=IIIIQ")  # anchor_mode, anchor_nr, anchored, pad, lost
EXTRA_KEY = struct.Struct("=QIHH")  # nr, slot, kind, phase
EXTRA_ENTRIES = 4096
FILTER_BITS = 65536
FILTER_SIZE = FILTER_BITS // 8
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
CONFIG = struct.Struct("=I")  # compat_mode
ANCHOR_NONE, ANCHOR_SYSCALL = 0, 1
PHASE_COUNTED, PHASE_BEFORE = 0, 1
BPF_NOEXIST = 1
MAP_HASH, MAP_ARRAY = 1, 2
# name -> (type, key size, value size, entries: None = the slot count)
MAPS: dict[str, tuple[int, int, int, int | None]] = {
    "recordings": (MAP_HASH, 4, 4, None),
    "counts": (MAP_ARRAY, 4, COUNTS_SIZE, None),
    "info": (MAP_ARRAY, 4, INFO.size, None),
    "extra": (MAP_HASH, EXTRA_KEY.size, 8, EXTRA_ENTRIES),
    "filter": (MAP_ARRAY, 4, FILTER_SIZE, 1),
}
LINK_PIN = "link"


class SlotsFullError(RecorderError):
    """Every slot is in use: the recording is refused (never merged with another)."""


@dataclass(slots=True)
class SlotReading:
    """What a slot counted: from the anchor on, before it, whether the anchor was seen, calls lost."""

    counted: dict[tuple[Arch, int], int] = field(default_factory=dict)
    before: dict[tuple[Arch, int], int] = field(default_factory=dict)
    anchored: bool = False
    lost: int = 0

    def recordings(self) -> tuple[Recording, Recording]:
        warn = (
            [f"{self.lost} syscalls could not be counted (overflow map full); the profile may lack some"]
            if self.lost
            else []
        )
        counted = Recording(backend="core", counts=defaultdict(int, self.counted), warnings=warn)
        return counted, Recording(backend="core", counts=defaultdict(int, self.before))


def info_bytes(anchor_nr: int | None) -> bytes:
    if anchor_nr is None:
        return INFO.pack(ANCHOR_NONE, 0, 0, 0, 0)
    if isinstance(anchor_nr, bool) or not 0 <= anchor_nr < NR_NUMBERS:
        raise RecorderError(f"anchor syscall number {anchor_nr} is out of range (0..{NR_NUMBERS - 1})")
    return INFO.pack(ANCHOR_SYSCALL, anchor_nr, 0, 0, 0)


def decode_slot(counts_raw: bytes, info_raw: bytes, extras: list[tuple[bytes, int]],
                kinds: tuple[Arch, Arch, Arch]) -> SlotReading:
    """A slot's counters (the raw array value, its info and its overflow entries) by phase."""
    if len(counts_raw) != COUNTS_SIZE:
        raise RecorderError(f"slot counters are {len(counts_raw)} bytes, expected {COUNTS_SIZE}")
    view = memoryview(counts_raw).cast("Q")
    reading = SlotReading()
    for phase, into in ((PHASE_COUNTED, reading.counted), (PHASE_BEFORE, reading.before)):
        for kind in range(NR_KINDS):
            base = (phase * NR_KINDS + kind) * NR_NUMBERS
            for nr in range(NR_NUMBERS):
                n = view[base + nr]
                if n:
                    key = (kinds[kind], nr)
                    into[key] = into.get(key, 0) + n
    for raw_key, n in extras:
        nr, _slot, kind, phase = EXTRA_KEY.unpack(raw_key)
        if kind >= NR_KINDS or phase > PHASE_BEFORE or not n:
            continue
        signed = nr - (1 << 64) if nr >= 1 << 63 else nr
        into = reading.before if phase == PHASE_BEFORE else reading.counted
        k = (kinds[kind], signed)
        into[k] = into.get(k, 0) + n
    _mode, _nr, anchored, _pad, lost = INFO.unpack(info_raw)
    reading.anchored = bool(anchored)
    reading.lost = lost
    return reading


def filter_bytes(namespaces: Iterable[int]) -> bytes:
    """The prefilter's bitmap: bit (inode mod FILTER_BITS) set for each namespace."""
    bits = bytearray(FILTER_SIZE)
    for ns in namespaces:
        bit = ns % FILTER_BITS
        bits[bit // 8] |= 1 << (bit % 8)  # little-endian u64 words: byte bit//8, bit bit%8
    return bytes(bits)


def load_object_bytes() -> bytes:
    try:
        return resources.files("syscribe.bpf").joinpath(OBJECT_RESOURCE).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise RecorderError(f"the compiled eBPF object is missing ({exc}); reinstall syscribe") from None


def ensure_bpffs(pin_dir: str) -> None:
    """Mount bpffs at /sys/fs/bpf if nothing is mounted there, and make `pin_dir` (mode 0700)."""
    if not pin_dir.startswith(BPFFS + "/"):
        raise RecorderError(f"the pin directory {pin_dir} is not below {BPFFS}; pins live in bpffs")
    if not _is_bpffs(BPFFS):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, None) != 0:
            err = ctypes.get_errno()
            raise RecorderError(
                f"cannot mount bpffs at {BPFFS}: {os.strerror(err)}; mount -t bpf bpf {BPFFS}"
            )
    with contextlib.suppress(FileExistsError):
        os.mkdir(pin_dir, 0o700)
    if not _is_bpffs(pin_dir):
        raise RecorderError(f"{pin_dir} is not in bpffs; mount -t bpf bpf {BPFFS}")


def _is_bpffs(path: str) -> bool:
    # os.statvfs does not give statfs's f_type; mountinfo names the file system of the mount
    # holding `path` (the longest mount point above it).
    real = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount_point = left.split()[4]
                if (real == mount_point or real.startswith(mount_point.rstrip("/") + "/")) and len(
                    mount_point
                ) >= len(best):
                    best, fstype = mount_point, right.split()[0]
    except OSError:
        return False
    return fstype == "bpf"


class ResidentProgram:
    """The loaded (or picked-up) program and its map fds."""

    def __init__(self, pin_dir: str = DEFAULT_PIN_DIR, *, slots: int = DEFAULT_SLOTS,
                 native: Arch | None = None, object_bytes: bytes | None = None) -> None:
        if isinstance(slots, bool) or not 1 <= slots <= MAX_SLOTS:
            raise RecorderError(f"slots must be 1..{MAX_SLOTS}, got {slots}")
        self.pin_dir = pin_dir.rstrip("/")
        self.native = native or archmod.from_machine(os.uname().machine)
        self.kinds = kinds_for(self.native)
        self.slots = slots
        self._object_bytes = object_bytes
        self._obj: libbpf.BpfObject | None = None
        self.fds: dict[str, int] = {}
        self.picked_up = False  # True when the maps came from pins of an earlier run
        self.program: str | None = None

    # -- life ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Pick up the pinned program and maps, or load, attach and pin them."""
        from syscribe.recorder.coreobject import check_kernel

        check_kernel()
        ensure_bpffs(self.pin_dir)
        if self._pick_up():
            self.picked_up = True
            return
        self._remove_pins()
        self._load()

    def _pick_up(self) -> bool:
        names = [*MAPS, LINK_PIN]
        present = [n for n in names if os.path.lexists(f"{self.pin_dir}/{n}")]
        if not present:
            return False
        if len(present) != len(names):
            return False  # a half-made or half-removed pin set: start over
        fds: dict[str, int] = {}
        try:
            for name, (mtype, ksize, vsize, entries) in MAPS.items():
                fd = libbpf.obj_get(f"{self.pin_dir}/{name}")
                fds[name] = fd
                got = libbpf.map_info(fd)
                if got[:3] != (mtype, ksize, vsize) or (entries is not None and got[3] != entries):
                    raise RecorderError(
                        f"the pinned map {self.pin_dir}/{name} has another layout than this syscribe's "
                        f"(type, key, value, entries {got}); stop the old recorder with --unload first"
                    )
                if name == "recordings":
                    self.slots = got[3]
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        self.fds = fds
        return True

    def _load(self) -> None:
        data = self._object_bytes if self._object_bytes is not None else load_object_bytes()
        last: RecorderError | None = None
        for program in PROGRAMS:
            obj = libbpf.BpfObject(data, OBJECT_NAME)
            try:
                for name in PROGRAMS:
                    obj.set_autoload(name, name == program)
                obj.set_rodata(CONFIG.pack(compat_mode_for(self.native)))
                for name, (_t, ksize, vsize, entries) in MAPS.items():
                    m = obj.map(name)
                    if obj.key_size(m) != ksize or obj.value_size(m) != vsize:
                        raise RecorderError(
                            f"the eBPF object's {name} map has an unexpected layout; reinstall syscribe"
                        )
                    if entries is None:
                        obj.set_max_entries(m, self.slots)
                obj.load()
                obj.attach(program, TRACEPOINT)
            except RecorderError as exc:
                obj.close()
                last = exc
                continue
            except BaseException:
                obj.close()
                raise
            try:
                for name in MAPS:
                    obj.pin_map(obj.map(name), f"{self.pin_dir}/{name}")
                # The link last: its pin is what says "a complete set is here".
                obj.pin_links(f"{self.pin_dir}/{LINK_PIN}")
                self.fds = {name: os.dup(obj.map_fd(obj.map(name))) for name in MAPS}
            except BaseException:
                obj.close()
                self._remove_pins()
                raise
            self._obj = obj
            self.program = program
            return
        assert last is not None
        raise last

    def close(self) -> None:
        """Let go of the fds; the pinned program keeps counting."""
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = {}
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def unload(self) -> None:
        """Detach the program and free the maps (once every fd is closed): remove the pins."""
        self.close()
        self._remove_pins()
        with contextlib.suppress(OSError):
            os.rmdir(self.pin_dir)  # only when empty: never someone else's pins

    def _remove_pins(self) -> None:
        for name in (LINK_PIN, *MAPS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.pin_dir}/{name}")

    # -- recordings ------------------------------------------------------------------------------
    def _fd(self, name: str) -> int:
        try:
            return self.fds[name]
        except KeyError:
            raise RecorderError("the resident program is not open") from None

    def start(self, slot: int, mnt_ns: int, anchor_nr: int | None) -> None:
        """Count `mnt_ns` into `slot` from now on. SlotsFullError when the kernel map is full,
        RecorderError when the namespace is already being recorded."""
        self._check_slot(slot)
        if not 0 < mnt_ns <= 0xFFFFFFFF:
            raise RecorderError(f"mount namespace inode {mnt_ns} is out of range")
        self._clear(slot)
        self._must(libbpf.fd_update(self._fd("info"), U32.pack(slot), info_bytes(anchor_nr)), "info")
        # The bit first: the program must never find the namespace in the map with its bit clear.
        self._set_filter([*self.entries(), mnt_ns])
        err = libbpf.fd_update(self._fd("recordings"), U32.pack(mnt_ns), U32.pack(slot), BPF_NOEXIST)
        if err:
            self._set_filter(self.entries())
        if err == -errno.EEXIST:
            raise RecorderError(f"mount namespace {mnt_ns} is already being recorded")
        if err == -errno.E2BIG:
            raise SlotsFullError(f"all {self.slots} recording slots of the resident recorder are in use")
        self._must(err, "recordings")

    def read(self, slot: int) -> SlotReading:
        """The slot's counters now (the recording goes on)."""
        self._check_slot(slot)
        counts_raw = libbpf.fd_lookup(self._fd("counts"), U32.pack(slot), COUNTS_SIZE)
        info_raw = libbpf.fd_lookup(self._fd("info"), U32.pack(slot), INFO.size)
        if counts_raw is None or info_raw is None:
            raise RecorderError(f"slot {slot} is missing from the counter maps")
        extras: list[tuple[bytes, int]] = []
        for key in self._extra_keys(slot):
            value = libbpf.fd_lookup(self._fd("extra"), key, 8)
            if value is not None:
                extras.append((key, U64.unpack(value)[0]))
        return decode_slot(counts_raw, info_raw, extras, self.kinds)

    def end(self, slot: int, mnt_ns: int) -> SlotReading:
        """Stop counting `mnt_ns`, read its slot, clear it."""
        self.forget(mnt_ns)
        reading = self.read(slot)
        self._clear(slot)
        return reading

    def forget(self, mnt_ns: int) -> None:
        libbpf.fd_delete(self._fd("recordings"), U32.pack(mnt_ns))
        self._set_filter(self.entries())

    def _set_filter(self, namespaces: Iterable[int]) -> None:
        self._must(libbpf.fd_update(self._fd("filter"), U32.pack(0), filter_bytes(namespaces)), "filter")

    def entries(self) -> dict[int, int]:
        """mount namespace inode -> slot, as the kernel has them."""
        fd = self._fd("recordings")
        out: dict[int, int] = {}
        for key in libbpf.fd_keys(fd, 4):
            value = libbpf.fd_lookup(fd, key, 4)
            if value is not None:
                out[U32.unpack(key)[0]] = U32.unpack(value)[0]
        return out

    def memory(self) -> dict[str, int]:
        """Bytes of kernel memory each map holds (the kernel's own `memlock` accounting)."""
        out: dict[str, int] = {}
        for name, fd in self.fds.items():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
                    if line.startswith("memlock:"):
                        out[name] = int(line.split()[1])
        return out

    def _clear(self, slot: int) -> None:
        self._must(libbpf.fd_update(self._fd("counts"), U32.pack(slot), bytes(COUNTS_SIZE)), "counts")
        self._must(libbpf.fd_update(self._fd("info"), U32.pack(slot), info_bytes(None)), "info")
        for key in self._extra_keys(slot):
            libbpf.fd_delete(self._fd("extra"), key)

    def _extra_keys(self, slot: int) -> list[bytes]:
        return [k for k in libbpf.fd_keys(self._fd("extra"), EXTRA_KEY.size)
                if EXTRA_KEY.unpack(k)[1] == slot]

    def _check_slot(self, slot: int) -> None:
        if isinstance(slot, bool) or not 0 <= slot < self.slots:
            raise RecorderError(f"slot {slot} is out of range (0..{self.slots - 1})")

    @staticmethod
    def _must(err: int, what: str) -> None:
        if err:
            raise libbpf.explain(f"updating the eBPF map {what}", err)


__all__ = ["COMPAT_X86", "DEFAULT_PIN_DIR", "ResidentProgram", "SlotReading", "SlotsFullError"]
