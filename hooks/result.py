"""What a finished recording becomes: named counts, the profile, and the metadata written beside it.

Pure (no I/O): the tracer passes in the counters it read and a function that names a syscall number
(libseccomp, per architecture), and gets back the profile and the metadata document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syscribe import annotations as keys
from syscribe import ociprofile as prof
from syscribe import profilemerge
from syscribe.arch import Arch

ANCHOR_NAME = "prctl"

NameOf = Callable[[Arch, int], "str | None"]


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts per architecture, by name, and the numbers that have no name."""

    by_arch: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    unknown: Mapping[str, Mapping[int, int]] = field(default_factory=dict)

    def names(self) -> frozenset[str]:
        return frozenset(n for names in self.by_arch.values() for n in names)

    @property
    def total(self) -> int:
        return sum(sum(v.values()) for v in self.by_arch.values()) + sum(
            sum(v.values()) for v in self.unknown.values()
        )


def tally(counts: Mapping[tuple[Arch, int], int], name_of: NameOf) -> Tally:
    by_arch: dict[str, dict[str, int]] = {}
    unknown: dict[str, dict[int, int]] = {}
    for (arch, nr), n in counts.items():
        if n <= 0:
            continue
        name = name_of(arch, nr)
        if name is None:
            slot = unknown.setdefault(arch.name, {})
            slot[nr] = slot.get(nr, 0) + n
        else:
            named = by_arch.setdefault(arch.name, {})
            named[name] = named.get(name, 0) + n
    return Tally(
        by_arch={a: dict(sorted(v.items())) for a, v in sorted(by_arch.items())},
        unknown={a: dict(sorted(v.items())) for a, v in sorted(unknown.items())},
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    profile: prof.Profile
    warnings: tuple[str, ...]
    excluded: tuple[str, ...]  # syscalls seen only before the anchor, left out of the profile
    added: tuple[str, ...] = ()  # the runtime's own, known to follow the filter, not seen this time


class NothingRecordedError(ValueError):
    pass


def build(
    counted: Tally,
    before: Tally,
    *,
    native: Arch,
    trim: bool,
    anchored: bool,
    base: prof.Profile | None = None,
    runtime_extra: Iterable[str] = (),
) -> Outcome:
    """The profile of a container's recording.

    `counted` is what the tracer saw from the anchor on (everything, without an anchor); `before` what
    it saw before the anchor. With `trim` and the anchor seen, `before` stays out of the profile.
    `runtime_extra` is what the runtime is known to call after loading the filter (syscribe.runtimes):
    a Go runtime such as runc's makes some of these only now and then, so one recording may miss them.
    """
    warnings: list[str] = []
    names = set(counted.names())
    excluded: tuple[str, ...] = ()
    if trim and anchored:
        excluded = tuple(sorted(before.names() - names))
    else:
        if trim and before.total:
            warnings.append(
                f"the runtime made no {ANCHOR_NAME} after the hook ran, so its own setup could not be told "
                "apart from the workload: the profile includes everything the container's tasks did"
            )
        names |= before.names()
    for tally_ in (counted, before):
        warnings.extend(_unknown_warnings(tally_))
    if not names:
        raise NothingRecordedError(
            "no syscalls were recorded for the container (it exited before the tracer attached, or it "
            "shares no mount namespace of its own); nothing was written"
        )
    added = tuple(sorted(set(runtime_extra) - names))
    recorded = prof.from_names(names | set(added), native)
    if base is None:
        return Outcome(recorded, tuple(dict.fromkeys(warnings)), excluded, added)
    merged = profilemerge.merge_input(base, recorded)
    return Outcome(merged.profile, tuple(dict.fromkeys([*warnings, *merged.warnings])), excluded, added)


def _unknown_warnings(t: Tally) -> Iterable[str]:
    for arch, numbers in t.unknown.items():
        yield (
            f"{len(numbers)} {arch} syscall number(s) have no name in libseccomp, so the profile cannot "
            f"list them: {', '.join(map(str, numbers))} (a newer libseccomp may know them)"
        )


def metadata(
    *,
    container_id: str,
    annotations: Mapping[str, str],
    key: str,
    runtime: str | None,
    backend: str,
    started: str,
    ended: str,
    seconds: float,
    output: str,
    input_path: str | None,
    runtime_init: str,
    anchored: bool,
    counted: Tally,
    before: Tally,
    outcome: Outcome,
    version: str,
) -> dict[str, Any]:
    """The document written beside the profile: who was recorded, how, and what was seen."""
    return {
        "syscribeVersion": version,
        "containerID": container_id,
        "container": annotations.get(keys.CONTAINER_NAME),
        "pod": annotations.get(keys.POD_NAME),
        "namespace": annotations.get(keys.POD_NAMESPACE),
        "podUID": annotations.get(keys.POD_UID),
        "annotation": key,
        "runtime": runtime,
        "backend": backend,
        "started": started,
        "ended": ended,
        "seconds": round(seconds, 3),
        "profile": output,
        "input": input_path,
        "runtimeInit": {
            "mode": runtime_init,
            "anchor": ANCHOR_NAME if runtime_init == "trim" else None,
            "anchorSeen": anchored,
            "excluded": list(outcome.excluded),
            "added": list(outcome.added),
            "before": _counts_doc(before),
        },
        "syscalls": _counts_doc(counted),
        "allowed": len(outcome.profile.named()),
        "warnings": list(outcome.warnings),
    }


def _counts_doc(t: Tally) -> dict[str, Any]:
    out: dict[str, Any] = {arch: dict(names) for arch, names in t.by_arch.items()}
    if t.unknown:
        out["unknown"] = {arch: {str(nr): n for nr, n in nums.items()} for arch, nums in t.unknown.items()}
    return out
