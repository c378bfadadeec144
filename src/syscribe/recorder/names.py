"""A Recording's syscall numbers as names, through libseccomp, for the architecture that made each
call. Numbers libseccomp has no name for (its table lags the kernel) are kept and reported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from syscribe.arch import Arch
from syscribe.recorder.base import Recording
from syscribe.syscalls import name_of


@dataclass(frozen=True)
class NamedSyscalls:
    names: frozenset[str]  # every known name, all arches
    by_arch: Mapping[Arch, frozenset[str]]
    unknown: Mapping[Arch, frozenset[int]]  # numbers libseccomp has no name for

    def warnings(self) -> list[str]:
        """One line per architecture with numbers that have no name, for the user to see."""
        return [
            f"{len(nrs)} {arch} syscall number(s) have no name in libseccomp, so a profile cannot list "
            f"them: {', '.join(map(str, sorted(nrs)))} (a newer libseccomp may know them)"
            for arch, nrs in sorted(self.unknown.items(), key=lambda kv: kv[0].name)
        ]


def name_recording(rec: Recording) -> NamedSyscalls:
    named: dict[Arch, set[str]] = {}
    unknown: dict[Arch, set[int]] = {}
    for (arch, nr), count in rec.counts.items():
        if count <= 0:
            continue
        name = name_of(arch, nr)
        if name is None:
            unknown.setdefault(arch, set()).add(nr)
        else:
            named.setdefault(arch, set()).add(name)
    by_arch = {a: frozenset(n) for a, n in named.items()}
    return NamedSyscalls(
        names=frozenset[str]().union(*by_arch.values()),
        by_arch=MappingProxyType(by_arch),
        unknown=MappingProxyType({a: frozenset(n) for a, n in unknown.items()}),
    )
