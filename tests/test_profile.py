"""The pure profile model: building, parsing (with broken, hostile and huge input), writing, merging
with an input profile, union, and the coverage check."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from syscribe import arch, profilemerge, runtimes
from syscribe import ociprofile as prof
from syscribe.ociprofile import Arg, Profile, ProfileError, Rule

X86_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def recorded(*names: str) -> Profile:
    return prof.from_names(names, arch.X86_64)


def oci(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO"}
    base.update(fields)
    return base


def rule(names: list[str], action: str = "SCMP_ACT_ALLOW", **extra: Any) -> dict[str, Any]:
    return {"names": names, "action": action, **extra}


# --- building and writing ----------------------------------------------------------------------------


def test_recorded_profile_has_the_contract_shape() -> None:
    data = json.loads(prof.dumps(recorded("write", "mkdir", "execve", "mkdir")))
    assert data == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": X86_ARCHES,
        "syscalls": [{"names": ["execve", "mkdir", "write"], "action": "SCMP_ACT_ALLOW"}],
    }
    assert "archMap" not in prof.dumps(recorded("read"))


def test_sub_architectures_follow_the_native_one() -> None:
    p = prof.from_names(["read"], arch.BY_NAME["aarch64"])
    assert p.architectures == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")


def test_an_empty_recording_is_an_error_not_an_empty_rule() -> None:
    with pytest.raises(ProfileError, match="no syscalls were recorded"):
        prof.from_names([], arch.X86_64)


def test_round_trip_keeps_every_field() -> None:
    data = {
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "opaque",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 0xFFFFFFFF, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            },
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        ],
    }
    p = prof.parse(data)
    assert prof.to_dict(p) == data
    assert prof.loads(prof.dumps(p)) == p


def test_docker_style_input_is_accepted_and_never_written() -> None:
    # The fixture of containers/oci-seccomp-bpf-hook: empty includes/excludes, comment, archMap.
    data = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {
                "names": ["mkdir"],
                "action": "SCMP_ACT_ERRNO",
                "args": [],
                "comment": "",
                "includes": {},
                "excludes": {},
            },
            {"name": "rmdir", "action": "SCMP_ACT_ERRNO"},
        ],
    }
    p = prof.parse(data)
    assert p.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86")
    assert p.syscalls[1].names == ("rmdir",)
    out = prof.dumps(p)
    assert "archMap" not in out and "comment" not in out and "includes" not in out


# --- broken and hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("not json", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[]", "is a list; expected a JSON object"),
        ('"SCMP_ACT_ERRNO"', "is a string"),
        ("42", "is a number"),
        ("null", "is null"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultAction": "SCMP_ACT_ALLOW"}', "appears twice"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": NaN}', "NaN"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": Infinity}', "Infinity"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": ' + "9" * 5000 + "}", "thousands of digits"),
        ('{"kind": "SeccompProfile"}', "Kubernetes resource"),
        ('{"ociVersion": "1.0.2", "linux": {}}', "config.json"),
    ],
)
def test_text_that_is_not_a_profile(text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        prof.loads(text)


def test_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ProfileError, match="not UTF-8"):
        prof.loads(b'{"defaultAction": "\xff"}')


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "defaultAction: missing"),
        (oci(defaultAction=None), "defaultAction: null; expected a string"),
        (oci(defaultAction=1), "defaultAction: a number"),
        (
            oci(defaultAction="SCMP_ACT_BOGUS"),
            r"unknown action \(a string of 14 characters\); valid: SCMP_ACT_KILL",
        ),
        (oci(defaultAction="scmp_act_errno"), "unknown action"),
        (oci(defaultAction="A" * 10_000), r"unknown action \(a string of 10000 characters\)"),
        (oci(defaultErrnoRet="1"), "defaultErrnoRet: a string"),
        (oci(defaultErrnoRet=True), "defaultErrnoRet: a boolean"),
        (oci(defaultErrnoRet=1.0), "defaultErrnoRet: a fractional number"),
        (oci(defaultErrnoRet=-1), "out of range"),
        (oci(defaultErrnoRet=1 << 70), "out of range"),
        (oci(defaultErrnoRet=10**40), "defaultErrnoRet: out of range"),
        (oci(architectures="SCMP_ARCH_X86_64"), "architectures: a string; expected a list"),
        (oci(architectures=[1]), r"architectures\[0\]: a number"),
        (
            oci(architectures=["SCMP_ARCH_VAX"]),
            r"unknown architecture \(a string of 13 characters\); valid: SCMP_ARCH_AARCH64",
        ),
        (oci(architectures=["x86_64"]), "unknown architecture"),
        (oci(archMap={}), "archMap: an object"),
        (oci(archMap=[{"architecture": "SCMP_ARCH_Q"}]), r"archMap\[0\].architecture: unknown architecture"),
        (oci(archMap=[{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["x"]}]), "subArchitectures"),
        (oci(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "unknown flag"),
        (oci(listenerPath=5), "listenerPath: a number"),
        (oci(listenerPath="/x\x00y"), "NUL"),
        (oci(listenerMetadata="x" * 5000), "longer than"),
        (oci(syscalls={}), "syscalls: an object; expected a list"),
        (oci(syscalls=["read"]), r"syscalls\[0\]: a string; expected an object"),
        (oci(syscalls=[rule([])]), r"syscalls\[0\].names: empty"),
        (oci(syscalls=[{"action": "SCMP_ACT_ALLOW"}]), r"syscalls\[0\].names: empty"),
        (oci(syscalls=[rule("read")]), r"names: a string; expected a list"),
        (oci(syscalls=[rule([None])]), r"names\[0\]: null; expected a string"),
        (oci(syscalls=[rule([""])]), "is not a syscall name"),
        (oci(syscalls=[rule(["Read"])]), "is not a syscall name"),
        (oci(syscalls=[rule(["read; rm -rf /"])]), "is not a syscall name"),
        (oci(syscalls=[rule(["re\x00ad"])]), "is not a syscall name"),
        (oci(syscalls=[rule(["r" * 100_000])]), "100000 characters"),
        (oci(syscalls=[{"names": ["read"]}]), r"syscalls\[0\].action: missing"),
        (oci(syscalls=[rule(["read"], "SCMP_ACT_NOPE")]), r"syscalls\[0\].action: unknown action"),
        (oci(syscalls=[rule(["read"], errnoRet="EPERM")]), "errnoRet: a string"),
        (oci(syscalls=[rule(["read"], args={})]), "args: an object"),
        (oci(syscalls=[rule(["read"], args=[{"index": 0}] * 7)]), "7 filters"),
        (oci(syscalls=[rule(["read"], args=[5])]), r"args\[0\]: a number"),
        (oci(syscalls=[rule(["read"], args=[{"op": "SCMP_CMP_EQ"}])]), r"args\[0\].index: missing"),
        (oci(syscalls=[rule(["read"], args=[{"index": 0}])]), r"args\[0\].op: missing"),
        (oci(syscalls=[rule(["read"], args=[{"index": 6, "op": "SCMP_CMP_EQ"}])]), "from 0 to 5"),
        (
            oci(syscalls=[rule(["read"], args=[{"index": 0, "op": "SCMP_CMP_EQ", "value": -1}])]),
            "out of range",
        ),
        (
            oci(syscalls=[rule(["read"], args=[{"index": 0, "op": "SCMP_CMP_EQ", "value": 1 << 64}])]),
            "out of range",
        ),
        (
            oci(syscalls=[rule(["read"], args=[{"index": 0, "op": "SCMP_CMP_EQ", "valueTwo": "1"}])]),
            "a string",
        ),
        (oci(syscalls=[rule(["read"], args=[{"index": 0, "op": "SCMP_CMP_LIKE"}])]), "unknown operator"),
        (
            oci(syscalls=[rule(["read"], args=[{"index": 0, "op": "SCMP_CMP_EQ", "x": 1}])]),
            r"args\[0\]: unknown field \(key 3 of the object\)",
        ),
        (oci(syscalls=[rule(["read"], includes={"caps": ["CAP_SYS_ADMIN"]})]), "Docker's conditional rules"),
        (oci(syscalls=[rule(["read"], comment=5)]), "comment: a number"),
        (oci(syscalls=[{"name": 5, "action": "SCMP_ACT_ALLOW"}]), r"syscalls\[0\].name: a number"),
        (
            oci(defaultaction="SCMP_ACT_ERRNO"),
            r"the profile: unknown field \(key 2 of the object\); known fields: defaultAction",
        ),
        (oci(**{"k" * 1000: 1}), r"unknown field \(key 2 of the object\)"),
    ],
)
def test_invalid_fields_name_the_field_and_what_is_expected(data: object, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        prof.parse(data)


def test_null_lists_count_as_empty() -> None:
    p = prof.parse(oci(syscalls=None))
    assert p.syscalls == ()
    p = prof.parse(oci(syscalls=[rule(["read"], args=None)]))
    assert p.syscalls[0].args == ()


def test_a_100k_name_profile_parses_and_merges_in_linear_time() -> None:
    names = [f"s{i}" for i in range(100_000)]
    text = json.dumps(oci(syscalls=[rule(names)]))
    # No time bound here (bench/ is for that); a quadratic pass over 100k names would run into the
    # test timeout.
    p = prof.loads(text)
    merged = profilemerge.union([p, recorded("read")]).profile
    cover = profilemerge.coverage(merged, [p])
    out = prof.dumps(merged)
    assert len(p.syscalls[0].names) == 100_000
    assert cover.ok
    assert len(out) > 1_000_000


def test_many_rules_of_one_name_each() -> None:
    rules = [rule([f"s{i}"], "SCMP_ACT_ERRNO" if i % 2 else "SCMP_ACT_ALLOW") for i in range(50_000)]
    p = prof.parse(oci(syscalls=rules))
    merged = profilemerge.union([p, p]).profile
    assert profilemerge.coverage(merged, [p]).ok and profilemerge.coverage(p, [merged]).ok


# --- merge with an input profile (`if:`) -----------------------------------------------------------


def test_input_rules_are_kept_and_a_blocked_syscall_stays_blocked() -> None:
    base = prof.parse(
        oci(
            syscalls=[
                rule(["mkdir"], "SCMP_ACT_ERRNO", errnoRet=13),
                rule(["getpid"]),
            ]
        )
    )
    merged, warnings = profilemerge.merge_input(base, recorded("mkdir", "getpid", "write", "execve"))
    assert merged.syscalls[:2] == base.syscalls
    assert merged.syscalls[2] == Rule(("execve", "write"), "SCMP_ACT_ALLOW")
    assert "mkdir" not in merged.syscalls[2].names
    assert any("mkdir" in w for w in warnings)
    assert not any("getpid" in w for w in warnings)
    assert profilemerge.coverage(merged, [recorded("mkdir")]).names == ("mkdir",)


def test_a_conditional_input_rule_is_not_widened() -> None:
    cond = [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]
    base = prof.parse(oci(syscalls=[rule(["clone"], args=cond)]))
    merged, warnings = profilemerge.merge_input(base, recorded("clone", "read"))
    clone_rules = [r for r in merged.syscalls if "clone" in r.names]
    assert clone_rules == [base.syscalls[0]]
    assert any("clone" in w for w in warnings)


def test_an_allow_all_input_gets_a_warning_and_nothing_added() -> None:
    base = prof.parse({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["mkdir"], "SCMP_ACT_ERRNO")]})
    merged, warnings = profilemerge.merge_input(base, recorded("read", "mkdir"))
    assert merged == base
    assert len(warnings) == 1 and "allows every syscall" in warnings[0]


def test_merge_keeps_the_inputs_default_and_adds_architectures() -> None:
    base = prof.parse({"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures": ["SCMP_ARCH_X86_64"]})
    merged, warnings = profilemerge.merge_input(base, recorded("read"))
    assert merged.default_action == "SCMP_ACT_KILL_PROCESS"
    assert list(merged.architectures) == X86_ARCHES
    assert merged.syscalls == (Rule(("read",), "SCMP_ACT_ALLOW"),)
    assert warnings == []


def test_merge_never_writes_an_empty_rule() -> None:
    base = prof.parse(oci(syscalls=[rule(["read"])]))
    merged, _ = profilemerge.merge_input(base, recorded("read"))
    assert merged.syscalls == base.syscalls


# --- union and coverage ------------------------------------------------------------------------------


def test_union_of_recordings_is_one_sorted_allow_rule() -> None:
    merged, warnings = profilemerge.union([recorded("write", "read"), recorded("mkdir", "read")])
    assert merged == recorded("mkdir", "read", "write")
    assert warnings == []


def test_union_needs_one_default_action() -> None:
    with pytest.raises(ProfileError, match="profile 2 has defaultAction SCMP_ACT_KILL_PROCESS"):
        profilemerge.union([recorded("read"), prof.parse({"defaultAction": "SCMP_ACT_KILL_PROCESS"})])
    with pytest.raises(ProfileError, match="no profiles"):
        profilemerge.union([])


def test_union_treats_missing_errno_as_eperm() -> None:
    a = prof.parse(oci(syscalls=[rule(["read"])]))  # no defaultErrnoRet: runtimes return EPERM
    merged, _ = profilemerge.union([a, recorded("write")])
    assert merged.default_errno_ret == 1
    with pytest.raises(ProfileError, match="errno 38"):
        profilemerge.union([a, prof.parse(oci(defaultErrnoRet=38))])


def test_union_allow_beats_deny_and_conditions_add_up() -> None:
    c1 = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]
    c2 = [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]
    a = prof.parse(oci(syscalls=[rule(["mkdir"], "SCMP_ACT_KILL"), rule(["ioctl"], args=c1)]))
    b = prof.parse(oci(syscalls=[rule(["mkdir"]), rule(["ioctl"], args=c2), rule(["kill"], "SCMP_ACT_LOG")]))
    merged, _ = profilemerge.union([a, b])
    assert profilemerge.coverage(merged, [a, b]).ok
    ioctl = [r for r in merged.syscalls if "ioctl" in r.names]
    assert {r.args[0].value for r in ioctl} == {1, 2}
    assert not any(r.action == "SCMP_ACT_KILL" for r in merged.syscalls)


def test_union_of_differently_denied_syscalls_keeps_the_first_and_warns() -> None:
    a = prof.parse(oci(syscalls=[rule(["mkdir"], "SCMP_ACT_ERRNO", errnoRet=13)]))
    b = prof.parse(oci(syscalls=[rule(["mkdir"], "SCMP_ACT_KILL_PROCESS")]))
    merged, warnings = profilemerge.union([a, b])
    assert merged.syscalls == a.syscalls
    assert warnings and "mkdir" in warnings[0]


def test_union_of_allow_by_default_profiles_blocks_only_what_all_block() -> None:
    a = prof.parse(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["mkdir", "ptrace"], "SCMP_ACT_ERRNO")]}
    )
    b = prof.parse({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["ptrace"], "SCMP_ACT_ERRNO")]})
    merged, warnings = profilemerge.union([a, b])
    assert merged.syscalls == (Rule(("ptrace",), "SCMP_ACT_ERRNO"),)
    assert warnings == []
    c = prof.parse({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["ptrace"], "SCMP_ACT_KILL")]})
    merged, warnings = profilemerge.union([a, c])
    assert merged.syscalls == ()
    assert warnings and "ptrace" in warnings[0]


def test_union_refuses_different_listeners() -> None:
    a = prof.parse(oci(listenerPath="/a"))
    b = prof.parse(oci(listenerPath="/b"))
    with pytest.raises(ProfileError, match="listenerPath"):
        profilemerge.union([a, b])


def test_coverage_reports_names_architectures_and_defaults() -> None:
    small = recorded("read")
    big = recorded("read", "write")
    assert profilemerge.coverage(big, [small]).ok
    cover = profilemerge.coverage(small, [big])
    assert cover.names == ("write",)
    assert cover.lines() == ["syscall write"]
    native_only = prof.parse(oci(architectures=["SCMP_ARCH_X86_64"], syscalls=[rule(["read", "write"])]))
    assert profilemerge.coverage(native_only, [big]).architectures == ("SCMP_ARCH_X86", "SCMP_ARCH_X32")
    allow_all = prof.parse({"defaultAction": "SCMP_ACT_ALLOW"})
    cover = profilemerge.coverage(big, [allow_all])
    assert cover.default and "allows every syscall" in cover.default[0]
    assert profilemerge.coverage(allow_all, [big]).ok


def test_coverage_of_conditional_rules() -> None:
    cond = [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]
    b = prof.parse(oci(syscalls=[rule(["ioctl"], args=cond)]))
    assert profilemerge.coverage(b, [b]).ok
    assert profilemerge.coverage(recorded("ioctl"), [b]).ok
    assert profilemerge.coverage(recorded("read"), [b]).names == ("ioctl",)
    assert profilemerge.coverage(b, [recorded("ioctl")]).names == ("ioctl",)
    blocklist = prof.parse(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule(["ioctl"], "SCMP_ACT_ERRNO", args=cond)]}
    )
    allow_all = prof.parse({"defaultAction": "SCMP_ACT_ALLOW"})
    assert profilemerge.coverage(allow_all, [blocklist]).ok
    assert profilemerge.coverage(blocklist, [blocklist]).ok
    assert profilemerge.coverage(blocklist, [allow_all]).names == ("ioctl",)


def test_runtime_syscalls_are_added() -> None:
    p = profilemerge.for_runtime(recorded("read"), "runc")
    assert set(p.syscalls[0].names) == {"read"} | runtimes.after_filter("runc")
    with pytest.raises(ProfileError, match="unknown runtime"):
        profilemerge.for_runtime(p, "docker")
    with pytest.raises(ProfileError, match="not a syscall name"):
        profilemerge.add_allowed(p, ["BAD NAME"])
    assert profilemerge.add_allowed(p, []) is p


# --- properties --------------------------------------------------------------------------------------

NAMES = st.sampled_from(
    ["read", "write", "mkdir", "mkdirat", "symlink", "execve", "clone", "ioctl", "openat"]
)
ACTION = st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_LOG", "SCMP_ACT_KILL_PROCESS"])
ARGS = st.lists(
    st.builds(
        Arg,
        index=st.integers(0, 5),
        value=st.integers(0, 3),
        value_two=st.just(0),
        op=st.sampled_from(prof.OPS),
    ),
    max_size=2,
).map(tuple)
RULES = st.builds(
    Rule,
    names=st.lists(NAMES, min_size=1, unique=True).map(lambda n: tuple(sorted(n))),
    action=ACTION,
    args=ARGS,
)


def profiles(default: str) -> st.SearchStrategy[Profile]:
    return st.builds(
        Profile,
        default_action=st.just(default),
        architectures=st.lists(st.sampled_from(X86_ARCHES), unique=True).map(tuple),
        syscalls=st.lists(RULES, max_size=4).map(tuple),
    )


def _consistent(p: Profile) -> bool:
    # A name with two unconditional rules of different actions is rejected by libseccomp; skip those.
    seen: dict[str, str] = {}
    for r in p.syscalls:
        if r.args:
            continue
        for n in r.names:
            if seen.setdefault(n, r.action) != r.action:
                return False
    return True


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW"]).flatmap(
        lambda d: st.lists(profiles(d), min_size=1, max_size=4)
    )
)
def test_union_covers_every_input(ps: list[Profile]) -> None:
    ps = [p for p in ps if _consistent(p)]
    assume(ps)
    merged, _ = profilemerge.union(ps)
    cover = profilemerge.coverage(merged, ps)
    # With an allowing default, differently restricted names are widened (and warned about), never
    # narrowed; so the union covers every input either way.
    assert cover.ok, cover.lines()
    assert prof.loads(prof.dumps(merged)) == merged


@settings(max_examples=200, deadline=None)
@given(profiles("SCMP_ACT_ERRNO"), st.lists(NAMES, min_size=1))
def test_merge_input_keeps_rules_and_allows_what_is_not_named(base: Profile, names: list[str]) -> None:
    merged, _ = profilemerge.merge_input(base, recorded(*names))
    assert merged.syscalls[: len(base.syscalls)] == base.syscalls
    named = base.named()
    for n in names:
        if n not in named:
            assert profilemerge.coverage(merged, [recorded(n)]).ok


@settings(max_examples=200, deadline=None)
@given(st.lists(NAMES, min_size=1), st.lists(NAMES, min_size=1))
def test_coverage_of_recordings_is_set_inclusion(a: list[str], b: list[str]) -> None:
    assert profilemerge.coverage(recorded(*a), [recorded(*b)]).ok == (set(b) <= set(a))
    assert set(profilemerge.coverage(recorded(*a), [recorded(*b)]).names) == set(b) - set(a)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    )
)
def test_arbitrary_json_values_give_profile_errors_only(value: object) -> None:
    with contextlib.suppress(ProfileError):
        prof.parse(value)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["defaultAction", "defaultErrnoRet", "architectures", "syscalls", "flags"]),
        st.none() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=2),
    )
)
def test_near_miss_profiles_give_profile_errors_only(value: dict[str, object]) -> None:
    with contextlib.suppress(ProfileError):
        prof.parse(value)
