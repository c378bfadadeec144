"""Architectures as the kernel's audit layer, libseccomp and the OCI runtime spec name them.

Pure: no I/O. libseccomp's architecture tokens are the kernel's AUDIT_ARCH_* values (what `arch=` in an
audit record holds), so one table serves the recorder, the profile writer and the enricher.
"""

from __future__ import annotations

from dataclasses import dataclass

# x32 tasks run on the x86_64 syscall table with this bit set in the syscall number.
X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True, slots=True)
class Arch:
    name: str  # the short name audit and uname use: x86_64, i386, aarch64...
    oci: str  # the OCI runtime spec / libseccomp constant name
    token: int  # AUDIT_ARCH_* == libseccomp arch token

    def __str__(self) -> str:
        return self.name


_ARCHES = (
    Arch("x86_64", "SCMP_ARCH_X86_64", 0xC000003E),
    Arch("i386", "SCMP_ARCH_X86", 0x40000003),
    Arch("x32", "SCMP_ARCH_X32", 0x4000003E),
    Arch("aarch64", "SCMP_ARCH_AARCH64", 0xC00000B7),
    Arch("arm", "SCMP_ARCH_ARM", 0x40000028),
    Arch("ppc64le", "SCMP_ARCH_PPC64LE", 0xC0000015),
    Arch("ppc64", "SCMP_ARCH_PPC64", 0x80000015),
    Arch("ppc", "SCMP_ARCH_PPC", 0x00000014),
    Arch("s390x", "SCMP_ARCH_S390X", 0x80000016),
    Arch("s390", "SCMP_ARCH_S390", 0x00000016),
    Arch("riscv64", "SCMP_ARCH_RISCV64", 0xC00000F3),
    Arch("mips", "SCMP_ARCH_MIPS", 0x00000008),
    Arch("mipsel", "SCMP_ARCH_MIPSEL", 0x40000008),
    Arch("mips64", "SCMP_ARCH_MIPS64", 0x80000008),
    Arch("mipsel64", "SCMP_ARCH_MIPSEL64", 0xC0000008),
    Arch("loongarch64", "SCMP_ARCH_LOONGARCH64", 0xC0000102),
)

BY_NAME = {a.name: a for a in _ARCHES}
BY_OCI = {a.oci: a for a in _ARCHES}
BY_TOKEN = {a.token: a for a in _ARCHES}

X86_64 = BY_NAME["x86_64"]
I386 = BY_NAME["i386"]
X32 = BY_NAME["x32"]

# What `uname -m` says, to our names.
_MACHINE_ALIASES = {
    "amd64": "x86_64",
    "i686": "i386",
    "i586": "i386",
    "x86": "i386",
    "arm64": "aarch64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64el": "ppc64le",
}

# The architectures a profile lists for a native one: those whose tasks the same kernel runs, so a
# container that runs a 32-bit binary is still filtered (runc and the kubelet's defaults do the same).
SUBARCHES: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86_64", "i386", "x32"),
    "aarch64": ("aarch64", "arm"),
    "ppc64le": ("ppc64le",),
    "ppc64": ("ppc64", "ppc"),
    "s390x": ("s390x", "s390"),
    "mips64": ("mips64", "mips"),
    "mipsel64": ("mipsel64", "mipsel"),
    "riscv64": ("riscv64",),
    "loongarch64": ("loongarch64",),
}


class UnknownArchError(ValueError):
    pass


def from_machine(machine: str) -> Arch:
    """The Arch for a `uname -m` string."""
    name = _MACHINE_ALIASES.get(machine, machine)
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownArchError(f"unsupported machine architecture {machine!r}") from None


def from_oci(name: str) -> Arch:
    """The Arch for an OCI `SCMP_ARCH_*` name."""
    try:
        return BY_OCI[name]
    except KeyError:
        known = ", ".join(sorted(BY_OCI))
        raise UnknownArchError(f"unknown seccomp architecture {name!r}; known: {known}") from None


def from_audit(value: str) -> Arch:
    """The Arch for an audit record's `arch=` field (hex AUDIT_ARCH value, e.g. c000003e)."""
    try:
        token = int(value, 16)
    except ValueError:
        raise UnknownArchError(f"audit arch {value!r} is not a hex number") from None
    try:
        return BY_TOKEN[token]
    except KeyError:
        raise UnknownArchError(f"unknown audit arch 0x{token:08x}") from None


def from_any(name: str) -> Arch:
    """Accept a short name (x86_64, arm64...), an OCI name (SCMP_ARCH_X86_64) or an audit hex value."""
    if name.startswith("SCMP_ARCH_"):
        return from_oci(name)
    try:
        return from_machine(name)
    except UnknownArchError:
        pass
    try:
        return from_audit(name)
    except UnknownArchError:
        known = ", ".join(sorted(BY_NAME))
        raise UnknownArchError(f"unknown architecture {name!r}; use one of {known} or SCMP_ARCH_*") from None


def subarches(native: Arch) -> tuple[Arch, ...]:
    return tuple(BY_NAME[n] for n in SUBARCHES.get(native.name, (native.name,)))
