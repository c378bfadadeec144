"""Combining OCI seccomp profiles and comparing them: merge with an input profile, union, coverage.

Pure (no I/O) and stdlib-only: the hook imports it to merge its `if:` profile, and the hook's import
path stays lean. The semantics of merge, union and the coverage check are written down in
docs/profile-format.md; the code follows that text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from syscribe import runtimes
from syscribe.ociprofile import (
    ACT_ALLOW,
    ACT_ERRNO,
    ALLOWING,
    DEFAULT_ERRNO,
    Arg,
    Profile,
    ProfileError,
    Rule,
    check_name,
    unique_in_order,
)


class Merged(NamedTuple):
    profile: Profile
    warnings: list[str]


@dataclass(frozen=True, slots=True)
class Coverage:
    """What profile A lacks to allow everything the others allow."""

    names: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    default: tuple[str, ...] = ()  # descriptions of profiles whose default action allows more than A's

    @property
    def ok(self) -> bool:
        return not (self.names or self.architectures or self.default)

    def lines(self) -> list[str]:
        out = [f"syscall {n}" for n in self.names]
        out += [f"architecture {a}" for a in self.architectures]
        out += list(self.default)
        return out


# ---------------------------------------------------------------------------------------------------
# Adding to a profile


def add_allowed(profile: Profile, names: Iterable[str]) -> Profile:
    """`profile` that also allows `names` unconditionally (the union with an allow rule of them)."""
    wanted = sorted(set(names))
    if not wanted:
        return profile
    for i, name in enumerate(wanted):
        check_name(name, f"names[{i}]")
    return union([profile, replace(profile, syscalls=(Rule(tuple(wanted), ACT_ALLOW),))]).profile


def for_runtime(profile: Profile, runtime: str) -> Profile:
    """`profile` plus what `runtime` (runc, crun) calls after loading it (syscribe.runtimes)."""
    try:
        extra = runtimes.after_filter(runtime)
    except ValueError as exc:
        raise ProfileError(str(exc)) from None
    return add_allowed(profile, extra)


# ---------------------------------------------------------------------------------------------------
# Semantics: what a profile does with one syscall name


@dataclass(frozen=True, slots=True)
class _Frag:
    """One rule as it applies to one name."""

    action: str
    errno_ret: int | None
    args: tuple[Arg, ...]

    @property
    def allows(self) -> bool:
        return self.action in ALLOWING


@dataclass(slots=True)
class _Index:
    profile: Profile
    frags: dict[str, list[_Frag]] = field(default_factory=dict)

    @classmethod
    def of(cls, profile: Profile) -> _Index:
        index = cls(profile)
        for rule in profile.syscalls:
            frag = _Frag(rule.action, rule.errno_ret, rule.args)
            for name in rule.names:
                index.frags.setdefault(name, []).append(frag)
        return index

    def get(self, name: str) -> list[_Frag]:
        return self.frags.get(name, [])

    def always_allows(self, name: str) -> bool:
        frags = self.get(name)
        unconditional = [f for f in frags if not f.args]
        if unconditional:
            return unconditional[0].allows
        return self.profile.allows_by_default and all(f.allows for f in frags)

    def ever_allows(self, name: str) -> bool:
        frags = self.get(name)
        unconditional = [f for f in frags if not f.args]
        if unconditional:
            return unconditional[0].allows
        # A conditional block still leaves the other argument values to the default action.
        return self.profile.allows_by_default or any(f.allows for f in frags)


# libseccomp semantics, measured: the first unconditional rule of a syscall decides, later conflicting
# ones and all conditional ones are ignored; without one, conditional rules apply and the rest of the
# calls get the default action.


def _normal_action(action: str, errno_ret: int | None) -> tuple[str, int | None]:
    if action == "SCMP_ACT_KILL":
        action = "SCMP_ACT_KILL_THREAD"
    if action in (ACT_ERRNO, "SCMP_ACT_TRACE") and errno_ret is None:
        errno_ret = DEFAULT_ERRNO
    if action not in (ACT_ERRNO, "SCMP_ACT_TRACE"):
        errno_ret = None
    return action, errno_ret


def _describe_default(p: Profile) -> str:
    action, errno = _normal_action(p.default_action, p.default_errno_ret)
    return action if errno is None else f"{action} (errno {errno})"


# ---------------------------------------------------------------------------------------------------
# Merge with an input profile (the hook's `if:`)


def merge_input(base: Profile, recorded: Profile) -> Merged:
    """Extend `base` with what `recorded` allows, keeping every rule of `base` as it is.

    A syscall that `base` names in any rule keeps that rule: blocked stays blocked, conditional stays
    conditional. Recorded syscalls that `base` does not name are added in one SCMP_ACT_ALLOW rule.
    When `base`'s default action already allows everything, the result is `base` and a warning.
    """
    warnings: list[str] = []
    if base.allows_by_default:
        warnings.append(
            f"the input profile's defaultAction {base.default_action} allows every syscall it does not "
            "block, so the recorded syscalls add nothing; use SCMP_ACT_ERRNO to make an allow-list"
        )
        return Merged(base, warnings)
    index = _Index.of(base)
    recorded_names = sorted(_Index.of(recorded).frags)
    add = [n for n in recorded_names if n not in index.frags]
    kept = [n for n in recorded_names if n in index.frags and not index.always_allows(n)]
    if kept:
        warnings.append(
            "recorded syscalls the input profile blocks or allows only for some arguments, left as "
            "the input says: " + ", ".join(kept)
        )
    rules = base.syscalls + ((Rule(tuple(add), ACT_ALLOW),) if add else ())
    arches = unique_in_order(base.architectures + recorded.architectures)
    return Merged(replace(base, syscalls=rules, architectures=arches), warnings)


# ---------------------------------------------------------------------------------------------------
# Union of several profiles


def union(profiles: Sequence[Profile]) -> Merged:
    """A profile that allows what any of `profiles` allows (they must share their default action)."""
    if not profiles:
        raise ProfileError("no profiles to merge")
    first = profiles[0]
    want = _normal_action(first.default_action, first.default_errno_ret)
    for i, p in enumerate(profiles[1:], start=2):
        if _normal_action(p.default_action, p.default_errno_ret) != want:
            raise ProfileError(
                f"profile {i} has defaultAction {_describe_default(p)} but profile 1 has "
                f"{_describe_default(first)}; merge only profiles with the same default action"
            )
    listeners = {(p.listener_path, p.listener_metadata) for p in profiles if p.listener_path is not None}
    if len(listeners) > 1:
        raise ProfileError("the profiles name different listenerPath/listenerMetadata; merge them by hand")
    indexes = [_Index.of(p) for p in profiles]
    names: dict[str, None] = {}
    for index in indexes:
        names.update(dict.fromkeys(index.frags))
    warnings: list[str] = []
    if first.allows_by_default:
        allowed, groups = _union_allow_default(indexes, names, warnings)
    else:
        allowed, groups = _union_deny_default(indexes, names, warnings)
    rules: list[Rule] = []
    if allowed:
        rules.append(Rule(tuple(sorted(allowed)), ACT_ALLOW))
    for frag, group in groups.items():
        rules.append(Rule(tuple(sorted(group)), frag.action, frag.errno_ret, frag.args))
    errno = next((p.default_errno_ret for p in profiles if p.default_errno_ret is not None), None)
    listener = next(iter(listeners), (None, None))
    merged = Profile(
        default_action=first.default_action,
        default_errno_ret=errno,
        architectures=unique_in_order(a for p in profiles for a in p.architectures),
        flags=unique_in_order(f for p in profiles for f in p.flags),
        listener_path=listener[0],
        listener_metadata=listener[1],
        syscalls=tuple(rules),
    )
    return Merged(merged, warnings)


def _union_deny_default(
    indexes: Sequence[_Index], names: Iterable[str], warnings: list[str]
) -> tuple[set[str], dict[_Frag, list[str]]]:
    allowed: set[str] = set()
    groups: dict[_Frag, list[str]] = {}
    differing: list[str] = []
    for name in names:
        if any(ix.always_allows(name) for ix in indexes):
            allowed.add(name)
            continue
        # Conditional allows add up: each one lets more calls through.
        kept: dict[_Frag, None] = {}
        for ix in indexes:
            kept.update((f, None) for f in ix.get(name) if f.allows)
        # How a call is denied (errno, kill, log...) comes from the first profile that says so.
        denials = [tuple(f for f in ix.get(name) if not f.allows) for ix in indexes]
        chosen = next((d for d in denials if d), ())
        if any(d and d != chosen for d in denials):
            differing.append(name)
        if kept:
            # libseccomp lets an unconditional rule override every conditional rule of the syscall.
            chosen = tuple(f for f in chosen if f.args)
        kept.update((f, None) for f in chosen)
        for frag in kept:
            groups.setdefault(frag, []).append(name)
    if differing:
        warnings.append(
            "profiles deny these syscalls in different ways; the first profile's rule is kept: "
            + ", ".join(sorted(differing))
        )
    return allowed, groups


def _union_allow_default(
    indexes: Sequence[_Index], names: Iterable[str], warnings: list[str]
) -> tuple[set[str], dict[_Frag, list[str]]]:
    groups: dict[_Frag, list[str]] = {}
    widened: list[str] = []
    for name in names:
        per = [tuple(ix.get(name)) for ix in indexes]
        # One profile letting the syscall fall through to its allowing default is enough to allow it.
        if any(not frags or ix.always_allows(name) for frags, ix in zip(per, indexes, strict=True)):
            continue
        if any(frags != per[0] for frags in per):
            widened.append(name)
            continue
        for frag in dict.fromkeys(per[0]):
            groups.setdefault(frag, []).append(name)
    if widened:
        warnings.append(
            "profiles restrict these syscalls in different ways, so the union allows them: "
            + ", ".join(sorted(widened))
        )
    return set(), groups


# ---------------------------------------------------------------------------------------------------
# Coverage: does A allow everything the others allow?


def coverage(a: Profile, others: Sequence[Profile]) -> Coverage:
    ia = _Index.of(a)
    missing: set[str] = set()
    arches: dict[str, None] = {}
    default: list[str] = []
    for number, b in enumerate(others, start=2):
        ib = _Index.of(b)
        if b.allows_by_default and not a.allows_by_default:
            default.append(
                f"profile {number} allows every syscall it does not name (defaultAction "
                f"{b.default_action}); the first profile denies them ({_describe_default(a)})"
            )
        candidates = set(ib.frags)
        if b.allows_by_default:
            candidates |= set(ia.frags)
        for name in candidates:
            if ib.ever_allows(name) and not _covers(ia, ib, name):
                missing.add(name)
        if a.architectures:
            arches.update((x, None) for x in b.architectures if x not in a.architectures)
    return Coverage(names=tuple(sorted(missing)), architectures=tuple(arches), default=tuple(default))


def _covers(ia: _Index, ib: _Index, name: str) -> bool:
    if ia.always_allows(name):
        return True
    if ib.always_allows(name):
        return False
    # B allows only some argument values. A covers them when it has the same conditional allows and
    # nothing that denies the call outright.
    a_frags = ia.get(name)
    if any(not f.args and not f.allows for f in a_frags):
        return False
    if ib.profile.allows_by_default:
        # B blocks some argument values and lets the rest through; A covers it when it lets the rest
        # through too and blocks no more than B does.
        a_blocks = {f for f in a_frags if not f.allows}
        b_blocks = {f for f in ib.get(name) if not f.allows}
        return ia.profile.allows_by_default and a_blocks <= b_blocks
    return {f for f in ib.get(name) if f.allows} <= set(a_frags)
