"""Enforcing a profile: build a libseccomp filter through ctypes and load it, as runc and crun do.

The filter is built in the parent (so that every problem is reported before anything runs) and loaded
by the child right before exec. Like runc: the native architecture is always in the filter, rules whose
action equals the default action are skipped (libseccomp refuses them), and a name this libseccomp does
not know on an architecture is left out for that architecture only (libseccomp does that itself when a
rule is added by name); a name it knows on no listed architecture is reported.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from functools import cache

from syscribe import ociprofile as prof
from syscribe import syscalls
from syscribe.ociprofile import Profile

# libseccomp's seccomp.h (stable ABI since 2.x).
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
_OPS = {op: i for i, op in enumerate(prof.OPS, start=1)}  # SCMP_CMP_NE = 1 ... SCMP_CMP_MASKED_EQ = 7
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_WAITKILL = 10  # libseccomp >= 2.6
_FLAG_ATTRS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ATTR_CTL_SSB,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": _ATTR_CTL_WAITKILL,
}
_NR_SCMP_ERROR = -1


class SeccompError(RuntimeError):
    """The profile cannot be enforced here; the message says why and what to do."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@cache
def _lib() -> ctypes.CDLL:
    try:
        lib = syscalls.libseccomp()
    except syscalls.LibseccompMissingError as exc:
        raise SeccompError(str(exc)) from None
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_attr_set.restype = ctypes.c_int
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_native.argtypes = []
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_add.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_version.argtypes = []
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    return lib


def version() -> str:
    v = _lib().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def action_value(action: str, errno_ret: int | None) -> int:
    """libseccomp's action word for an OCI action (runc's mapping: ERRNO and TRACE default to EPERM)."""
    if action == prof.ACT_ERRNO:
        return _ACT_ERRNO | ((prof.DEFAULT_ERRNO if errno_ret is None else errno_ret) & 0xFFFF)
    if action == "SCMP_ACT_TRACE":
        return _ACT_TRACE | ((prof.DEFAULT_ERRNO if errno_ret is None else errno_ret) & 0xFFFF)
    return _ACTIONS[action]


def arch_token(oci_name: str) -> int:
    """libseccomp's token for an OCI architecture name, 0 when this libseccomp does not know it."""
    short = oci_name.removeprefix("SCMP_ARCH_").lower()
    return int(_lib().seccomp_arch_resolve_name(short.encode()))


@dataclass
class Filter:
    """A built, not yet loaded, libseccomp filter."""

    ctx: int
    warnings: list[str] = field(default_factory=list)
    rules: int = 0

    def load(self) -> None:
        """Install the filter on the calling thread (and with TSYNC on all threads). Irreversible."""
        rc = _lib().seccomp_load(self.ctx)
        if rc < 0:
            raise SeccompError(f"the kernel refused the seccomp filter: {os.strerror(-rc)}")

    def release(self) -> None:
        if self.ctx:
            _lib().seccomp_release(self.ctx)
            self.ctx = 0


def build(profile: Profile, *, no_new_privs: bool | None = None) -> Filter:
    """A filter for `profile`. `no_new_privs` defaults to what loading needs: off for root (like a
    runtime with CAP_SYS_ADMIN), on otherwise, since the kernel requires one of them."""
    if profile.default_action == "SCMP_ACT_NOTIFY" or any(
        r.action == "SCMP_ACT_NOTIFY" for r in profile.syscalls
    ):
        raise SeccompError(
            "SCMP_ACT_NOTIFY needs a seccomp agent on listenerPath; syscribe cannot enforce it"
        )
    lib = _lib()
    default = action_value(profile.default_action, profile.default_errno_ret)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SeccompError(f"libseccomp refused defaultAction {profile.default_action}")
    filt = Filter(ctx=ctx)
    try:
        if no_new_privs is None:
            no_new_privs = os.geteuid() != 0
        _attr(ctx, _ATTR_CTL_NNP, int(no_new_privs), "no_new_privs")
        for flag in profile.flags:
            _attr(ctx, _FLAG_ATTRS[flag], 1, flag)
        tokens = [lib.seccomp_arch_native(), *_add_arches(ctx, profile.architectures)]
        _add_rules(filt, profile, default, tokens)
    except BaseException:
        filt.release()
        raise
    return filt


def _attr(ctx: int, attr: int, value: int, what: str) -> None:
    rc = _lib().seccomp_attr_set(ctx, attr, value)
    if rc < 0:
        raise SeccompError(
            f"libseccomp {version()} cannot set {what} ({os.strerror(-rc)}); remove it from the profile "
            "or use a newer libseccomp"
        )


def _add_arches(ctx: int, names: tuple[str, ...]) -> list[int]:
    lib = _lib()
    tokens: list[int] = []
    for name in names:
        token = arch_token(name)
        if token == 0:
            raise SeccompError(f"libseccomp {version()} does not know architecture {name}; remove it")
        rc = lib.seccomp_arch_add(ctx, token)
        # The native architecture is in every new filter already.
        if rc < 0 and rc != -errno.EEXIST:
            raise SeccompError(f"libseccomp cannot add architecture {name}: {os.strerror(-rc)}")
        tokens.append(token)
    return tokens


def _add_rules(filt: Filter, profile: Profile, default: int, tokens: list[int]) -> None:
    lib = _lib()
    unknown: dict[str, None] = {}
    for i, rule in enumerate(profile.syscalls):
        action = action_value(rule.action, rule.errno_ret)
        if action == default:
            continue  # libseccomp refuses a rule that does what the default does (runc skips it too)
        count = len(rule.args)
        cmps = (_ArgCmp * max(count, 1))()
        for j, arg in enumerate(rule.args):
            cmps[j] = _ArgCmp(arg.index, _OPS[arg.op], arg.value, arg.value_two)
        for name in rule.names:
            encoded = name.encode()
            nr = lib.seccomp_syscall_resolve_name(encoded)
            # Negative numbers other than -1 are libseccomp's placeholders for a syscall that does not
            # exist on that architecture.
            if nr == _NR_SCMP_ERROR or all(
                lib.seccomp_syscall_resolve_name_arch(t, encoded) < 0 for t in tokens
            ):
                unknown[name] = None
            if nr == _NR_SCMP_ERROR:
                continue
            rc = lib.seccomp_rule_add_array(filt.ctx, action, nr, count, cmps)
            if rc < 0:
                raise SeccompError(
                    f"syscalls[{i}] {name}: libseccomp refused the rule ({os.strerror(-rc)}); check its args"
                )
            filt.rules += 1
    if unknown:
        filt.warnings.append(
            f"libseccomp {version()} knows none of these syscalls on the profile's architectures, so the "
            "filter cannot allow or deny them: " + ", ".join(sorted(unknown))
        )
