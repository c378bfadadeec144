"""Syscall numbers to names and back, per architecture, through libseccomp (ctypes).

libseccomp carries a table for every architecture it supports, so the enricher can name a syscall from
an arm64 audit record on an x86_64 host. Its table may lag the running kernel by a few syscalls:
callers get None for a number it does not know and must keep the number, not drop it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

from syscribe import arch as archmod
from syscribe.arch import Arch


class LibseccompMissingError(RuntimeError):
    pass


@cache
def libseccomp() -> ctypes.CDLL:
    """libseccomp, loaded once, with the prototypes of its name tables (syscribe.seccomp adds more)."""
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError as exc:
        raise LibseccompMissingError(
            f"cannot load libseccomp ({exc}); install it: apt-get install libseccomp2"
        ) from None
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # malloc'd; freed below
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    return lib


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def native() -> Arch:
    return archmod.from_machine(os.uname().machine)


@cache
def name_of(arch: Arch, number: int) -> str | None:
    """The syscall's name on `arch`, or None when libseccomp does not know the number."""
    if number < 0 or number > 0xFFFFFFFF:
        return None
    if arch is archmod.X32 or (arch is archmod.X86_64 and number & archmod.X32_SYSCALL_BIT):
        # x32 numbers carry the x32 bit; libseccomp's x32 table resolves them with it set.
        arch = archmod.X32
        number |= archmod.X32_SYSCALL_BIT
    ptr = libseccomp().seccomp_syscall_resolve_num_arch(arch.token, number)
    if not ptr:
        return None
    try:
        name = ctypes.string_at(ptr).decode()
    finally:
        _libc().free(ctypes.c_void_p(ptr))
    # libseccomp answers with a placeholder for numbers it has no name for on some versions.
    if not name or name.startswith("UNKNOWN"):
        return None
    return name


@cache
def number_of(arch: Arch, name: str) -> int | None:
    """The syscall's number on `arch`, or None when it does not exist there (libseccomp's table)."""
    try:
        encoded = name.encode("ascii")
    except UnicodeEncodeError:
        return None
    nr = libseccomp().seccomp_syscall_resolve_name_arch(arch.token, encoded)
    # __NR_SCMP_ERROR is -1; other negative numbers are libseccomp's pseudo-syscalls for
    # multiplexed calls (socketcall and ipc on i386), which do exist.
    if nr == -1:
        return None
    return int(nr)


def is_known(name: str, arches: tuple[Arch, ...]) -> bool:
    return any(number_of(a, name) is not None for a in arches)
