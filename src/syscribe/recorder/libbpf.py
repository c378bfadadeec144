"""A minimal ctypes binding to libbpf.so.1: open an object, set its read-only globals, load it,
attach its programs, read its maps, free it. Also the few BTF queries the bcc backend needs.

Only what syscribe uses is bound. libbpf 1.x returns negative errno values (or NULL with errno set),
which become RecorderError with libbpf's own log attached: libbpf's messages are captured instead of
printed, so a successful run is silent and a failed one explains itself.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from syscribe.recorder.base import RecorderError

LIBBPF_SONAME = "libbpf.so.1"
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
LOCKDOWN = Path("/sys/kernel/security/lockdown")

# enum libbpf_print_level
_LIBBPF_WARN, _LIBBPF_INFO, _LIBBPF_DEBUG = 0, 1, 2
# BTF kinds (linux/btf.h)
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _OpenOpts(ctypes.Structure):
    # The leading fields of struct bpf_object_open_opts; `sz` tells libbpf how much of it we pass,
    # the rest counts as zero.
    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p)]


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


# libbpf's log lines of the current operation (libbpf_set_print is process-wide, so is this).
_LOG: collections.deque[str] = collections.deque(maxlen=200)
_LOG_LOCK = threading.Lock()


_VSNPRINTF = ctypes.CDLL(None).vsnprintf
_VSNPRINTF.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_VSNPRINTF.restype = ctypes.c_int


def _log_line(level: int, fmt: bytes | None, args: int | None) -> int:
    # va_list arrives as a pointer on x86_64 and aarch64, which is what vsnprintf takes.
    if fmt is None or level == _LIBBPF_DEBUG:
        return 0
    buf = ctypes.create_string_buffer(1024)
    _VSNPRINTF(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace").rstrip()
    if text:
        with _LOG_LOCK:
            _LOG.extend(line.removeprefix("libbpf: ") for line in text.splitlines() if line.strip())
    return 0


# Kept referenced for as long as libbpf may call it (for the life of the process).
_CAPTURE = _PRINT_FN(_log_line)


def take_log() -> list[str]:
    """libbpf's messages since the last call (and forget them)."""
    with _LOG_LOCK:
        lines = list(_LOG)
        _LOG.clear()
    return lines


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Route libbpf's messages to our log for the duration. The print hook is process-wide and bcc,
    which shares libbpf.so.1, installs its own; so ours is set around each call and theirs put back."""
    so = lib()
    previous = so.libbpf_set_print(_CAPTURE)
    try:
        yield
    finally:
        # A null function pointer is _PRINT_FN() (libbpf then prints nothing).
        so.libbpf_set_print(_PRINT_FN(previous) if previous else _PRINT_FN())


@cache
def lib() -> ctypes.CDLL:
    """libbpf.so.1 with the prototypes we use, its log captured. RecorderError when missing."""
    try:
        so = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
    except OSError as exc:
        raise RecorderError(
            f"cannot load {LIBBPF_SONAME} ({exc}); install it: apt-get install libbpf1"
        ) from None
    vp, cp, i, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    protos: dict[str, tuple[list[type], type | None]] = {
        "bpf_object__open_mem": ([vp, sz, ctypes.POINTER(_OpenOpts)], vp),
        "bpf_object__open_file": ([cp, ctypes.POINTER(_OpenOpts)], vp),
        "bpf_object__load": ([vp], i),
        "bpf_object__close": ([vp], None),
        "bpf_object__find_map_by_name": ([vp, cp], vp),
        "bpf_object__find_program_by_name": ([vp, cp], vp),
        "bpf_map__set_initial_value": ([vp, vp, sz], i),
        "bpf_map__initial_value": ([vp, ctypes.POINTER(sz)], vp),
        "bpf_map__value_size": ([vp], ctypes.c_uint32),
        "bpf_map__key_size": ([vp], ctypes.c_uint32),
        "bpf_map__lookup_elem": ([vp, vp, sz, vp, sz, ctypes.c_uint64], i),
        "bpf_map__get_next_key": ([vp, vp, vp, sz], i),
        "bpf_program__attach": ([vp], vp),
        "bpf_program__set_autoload": ([vp, ctypes.c_bool], i),
        "bpf_link__destroy": ([vp], i),
        "bpf_link__pin": ([vp, cp], i),
        "bpf_map__pin": ([vp, cp], i),
        "bpf_map__fd": ([vp], i),
        "bpf_map__set_max_entries": ([vp, ctypes.c_uint32], i),
        "bpf_obj_get": ([cp], i),
        "bpf_obj_get_info_by_fd": ([i, vp, ctypes.POINTER(ctypes.c_uint32)], i),
        "bpf_map_lookup_elem": ([i, vp, vp], i),
        "bpf_map_update_elem": ([i, vp, vp, ctypes.c_uint64], i),
        "bpf_map_delete_elem": ([i, vp], i),
        "bpf_map_get_next_key": ([i, vp, vp], i),
        "libbpf_num_possible_cpus": ([], i),
        "libbpf_strerror": ([i, cp, sz], i),
        "libbpf_set_print": ([_PRINT_FN], vp),
        "btf__load_vmlinux_btf": ([], vp),
        "btf__parse": ([cp, vp], vp),
        "btf__free": ([vp], None),
        "btf__find_by_name_kind": ([vp, cp, ctypes.c_uint32], ctypes.c_int32),
        "btf__type_by_id": ([vp, ctypes.c_uint32], ctypes.POINTER(_BtfType)),
        "btf__name_by_offset": ([vp, ctypes.c_uint32], cp),
        "btf__resolve_type": ([vp, ctypes.c_uint32], ctypes.c_int),
    }
    for name, (argtypes, restype) in protos.items():
        try:
            fn = getattr(so, name)
        except AttributeError:
            raise RecorderError(
                f"{LIBBPF_SONAME} lacks {name}; install libbpf 1.0 or newer (apt-get install libbpf1)"
            ) from None
        fn.argtypes = argtypes
        fn.restype = restype
    so.libbpf_set_print(_CAPTURE)  # silence libbpf from the start; see capturing()
    return so


def strerror(err: int) -> str:
    buf = ctypes.create_string_buffer(256)
    lib().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace") or os.strerror(err)


def _lockdown() -> str | None:
    try:
        text = LOCKDOWN.read_text()
    except OSError:
        return None
    # The active mode is the one in brackets: "none [integrity] confidentiality".
    start, end = text.find("["), text.find("]")
    mode = text[start + 1 : end] if 0 <= start < end else ""
    return mode if mode and mode != "none" else None


def explain(what: str, err: int) -> RecorderError:
    """One error for a failed libbpf call: the likely cause and remedy first, then libbpf's own log."""
    err = abs(err)
    log = take_log()
    if err in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
        hint = "loading eBPF programs needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN); run as root"
    elif (mode := _lockdown()) is not None and err in (errno.EPERM, errno.EACCES, errno.EINVAL):
        hint = (
            f"kernel lockdown is {mode!r}, which forbids eBPF reading kernel memory; "
            "boot with lockdown=none"
        )
    elif err in (errno.EPERM, errno.EACCES):
        hint = "the kernel refused (missing capability, or kernel.unprivileged_bpf_disabled); run as root"
    elif err == errno.ENOENT and "tracepoint" in what:
        hint = "tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing"
    else:
        hint = strerror(err)
    detail = f" (libbpf: {log[-1]})" if log else ""
    return RecorderError(f"{what} failed: {hint}{detail}")


class BpfObject:
    """An opened (then loaded) libbpf object. Close it, or use it as a context manager."""

    def __init__(self, data: bytes, name: str) -> None:
        self._lib = lib()
        self._links: list[int] = []
        # libbpf keeps a pointer into the buffer until the object is closed.
        self._buf = ctypes.create_string_buffer(data, len(data))
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), object_name=name.encode())
        take_log()
        with capturing():
            ctypes.set_errno(0)
            ptr = self._lib.bpf_object__open_mem(self._buf, len(data), ctypes.byref(opts))
            err = ctypes.get_errno()
        if not ptr:
            raise explain("opening the eBPF object", err or errno.EINVAL)
        self._obj: int | None = ptr

    def _ptr(self) -> int:
        if self._obj is None:
            raise RecorderError("the eBPF object is closed")
        return self._obj

    def map(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_map_by_name(self._ptr(), name.encode())
        if not ptr:
            raise RecorderError(f"the eBPF object has no map {name!r}; rebuild it (make bpf)")
        return int(ptr)

    def set_rodata(self, data: bytes, map_name: str = ".rodata") -> None:
        """Replace the initial value of the read-only globals; only before load()."""
        m = self.map(map_name)
        size = ctypes.c_size_t()
        if not self._lib.bpf_map__initial_value(m, ctypes.byref(size)):
            raise RecorderError(f"the eBPF object's {map_name} has no initial value")
        if size.value != len(data):
            raise RecorderError(
                f"the eBPF object's {map_name} is {size.value} bytes, expected {len(data)}; "
                "the object and syscribe disagree: reinstall syscribe"
            )
        buf = ctypes.create_string_buffer(data, len(data))
        err = self._lib.bpf_map__set_initial_value(m, buf, len(data))
        if err:
            raise explain(f"setting {map_name}", err)

    def load(self) -> None:
        take_log()
        with capturing():
            err = self._lib.bpf_object__load(self._ptr())
        if err:
            raise explain("loading the eBPF program", err)

    def _program(self, name: str) -> int:
        prog = self._lib.bpf_object__find_program_by_name(self._ptr(), name.encode())
        if not prog:
            raise RecorderError(f"the eBPF object has no program {name!r}; rebuild it (make bpf)")
        return int(prog)

    def set_autoload(self, program: str, autoload: bool) -> None:
        """Whether load() loads `program`; only before load()."""
        err = self._lib.bpf_program__set_autoload(self._program(program), autoload)
        if err:
            raise explain(f"selecting the eBPF program {program}", err)

    def attach(self, program: str, what: str) -> None:
        prog = self._program(program)
        take_log()
        with capturing():
            ctypes.set_errno(0)
            link = self._lib.bpf_program__attach(prog)
            err = ctypes.get_errno()
        if not link:
            raise explain(f"attaching to {what}", err or errno.EINVAL)
        self._links.append(int(link))

    def pin_links(self, path: str) -> None:
        """Pin the (one) attached link at `path` in bpffs: the program then stays attached after this
        process exits, until the pin is removed."""
        if len(self._links) != 1:
            raise RecorderError(f"expected one attached link to pin, found {len(self._links)}")
        err = self._lib.bpf_link__pin(self._links[0], path.encode())
        if err:
            raise explain(f"pinning the eBPF link at {path}", err)

    def pin_map(self, map_ptr: int, path: str) -> None:
        err = self._lib.bpf_map__pin(map_ptr, path.encode())
        if err:
            raise explain(f"pinning an eBPF map at {path}", err)

    def map_fd(self, map_ptr: int) -> int:
        fd = int(self._lib.bpf_map__fd(map_ptr))
        if fd < 0:
            raise explain("finding an eBPF map's fd", fd)
        return fd

    def set_max_entries(self, map_ptr: int, n: int) -> None:
        """Resize a map; only before load()."""
        err = self._lib.bpf_map__set_max_entries(map_ptr, n)
        if err:
            raise explain("sizing an eBPF map", err)

    def value_size(self, map_ptr: int) -> int:
        return int(self._lib.bpf_map__value_size(map_ptr))

    def key_size(self, map_ptr: int) -> int:
        return int(self._lib.bpf_map__key_size(map_ptr))

    def lookup(self, map_ptr: int, key: bytes, value_size: int) -> bytes | None:
        """The raw value (all CPUs' copies for a per-CPU map), or None when the key is absent."""
        kbuf = ctypes.create_string_buffer(key, len(key))
        vbuf = ctypes.create_string_buffer(value_size)
        err = self._lib.bpf_map__lookup_elem(map_ptr, kbuf, len(key), vbuf, value_size, 0)
        if err == -errno.ENOENT:
            return None
        if err:
            raise explain("reading an eBPF map", err)
        return vbuf.raw

    def keys(self, map_ptr: int) -> Iterator[bytes]:
        """Every key of a hash map (entries added while iterating may or may not be seen)."""
        size = self.key_size(map_ptr)
        cur = None
        nxt = ctypes.create_string_buffer(size)
        while True:
            err = self._lib.bpf_map__get_next_key(map_ptr, cur, nxt, size)
            if err == -errno.ENOENT:
                return
            if err:
                raise explain("listing an eBPF map", err)
            yield nxt.raw
            cur = ctypes.create_string_buffer(nxt.raw, size)

    def close(self) -> None:
        for link in self._links:
            self._lib.bpf_link__destroy(link)
        self._links.clear()
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _MapInfo(ctypes.Structure):
    # The leading fields of struct bpf_map_info (linux/bpf.h); the kernel fills what fits.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


def obj_get(path: str) -> int:
    """An fd of the object pinned at `path` in bpffs; FileNotFoundError when nothing is pinned there."""
    so = lib()
    with capturing():
        fd = int(so.bpf_obj_get(path.encode()))
    take_log()
    if fd == -errno.ENOENT:
        raise FileNotFoundError(errno.ENOENT, "nothing pinned", path)
    if fd < 0:
        raise explain(f"opening the pinned eBPF object {path}", fd)
    return fd


def map_info(fd: int) -> tuple[int, int, int, int]:
    """(type, key size, value size, max entries) of the map behind `fd`."""
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    err = lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if err:
        raise explain("reading an eBPF map's description", err)
    return info.type, info.key_size, info.value_size, info.max_entries


def fd_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value_size)
    err = lib().bpf_map_lookup_elem(fd, kbuf, vbuf)
    if err == -errno.ENOENT:
        return None
    if err:
        raise explain("reading an eBPF map", err)
    return vbuf.raw


def fd_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> int:
    """0, or the negative errno the kernel gave (EEXIST with BPF_NOEXIST, E2BIG when full)."""
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value, len(value))
    return int(lib().bpf_map_update_elem(fd, kbuf, vbuf, flags))


def fd_delete(fd: int, key: bytes) -> bool:
    """Whether the key was there."""
    kbuf = ctypes.create_string_buffer(key, len(key))
    err = lib().bpf_map_delete_elem(fd, kbuf)
    if err == -errno.ENOENT:
        return False
    if err:
        raise explain("deleting from an eBPF map", err)
    return True


def fd_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash map, as one list (taken before the caller changes the map)."""
    keys: list[bytes] = []
    cur = None
    nxt = ctypes.create_string_buffer(key_size)
    so = lib()
    while True:
        err = so.bpf_map_get_next_key(fd, cur, nxt)
        if err == -errno.ENOENT:
            return keys
        if err:
            raise explain("listing an eBPF map", err)
        keys.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)


def possible_cpus() -> int:
    n = int(lib().libbpf_num_possible_cpus())
    if n <= 0:
        raise explain("counting the possible CPUs", n or errno.EINVAL)
    return n


def member_offset(struct: str, path: str, btf_path: Path | None = None) -> int | None:
    """Byte offset of `path` (dotted members, e.g. "thread_info.status") in `struct`, from the kernel's
    BTF (or the BTF file at `btf_path`). None when there is no BTF, no such struct or member, or the
    member is a bitfield."""
    so = lib()
    with capturing():
        btf = (
            so.btf__load_vmlinux_btf() if btf_path is None else so.btf__parse(str(btf_path).encode(), None)
        )
    take_log()
    if not btf:
        return None
    try:
        type_id = so.btf__find_by_name_kind(btf, struct.encode(), BTF_KIND_STRUCT)
        if type_id <= 0:
            return None
        total = 0
        for member in path.split("."):
            found = _find_member(so, btf, type_id, member)
            if found is None:
                return None
            type_id, bit_offset = found
            if bit_offset % 8:
                return None
            total += bit_offset // 8
        return total
    finally:
        so.btf__free(btf)


def _find_member(so: ctypes.CDLL, btf: int, type_id: int, name: str) -> tuple[int, int] | None:
    resolved = so.btf__resolve_type(btf, type_id)
    if resolved < 0:
        return None
    t = so.btf__type_by_id(btf, resolved)
    if not t:
        return None
    info = t.contents.info
    kind = (info >> 24) & 0x1F
    if kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        return None
    vlen = info & 0xFFFF
    kind_flag = bool(info >> 31)
    members = ctypes.cast(
        ctypes.addressof(t.contents) + ctypes.sizeof(_BtfType), ctypes.POINTER(_BtfMember * vlen)
    ).contents
    for m in members:
        offset = m.offset & 0xFFFFFF if kind_flag else m.offset
        member_name = so.btf__name_by_offset(btf, m.name_off) or b""
        if member_name.decode(errors="replace") == name:
            return m.type, offset
        if not member_name:
            # Anonymous struct/union: its members belong to the enclosing type.
            inner = _find_member(so, btf, m.type, name)
            if inner is not None:
                return inner[0], inner[1] + offset
    return None
