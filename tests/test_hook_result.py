"""A finished recording to a profile and its metadata: trimming at the anchor, `if:` merging, names."""

from __future__ import annotations

import json

import pytest

from syscribe import arch as archmod
from syscribe import ociprofile as prof
from syscribe.arch import Arch
from syscribe.hooks.result import NothingRecordedError, Tally, build, metadata, tally
from syscribe.syscalls import name_of

X86_64, I386 = archmod.X86_64, archmod.I386
NAMES = {(X86_64, 0): "read", (X86_64, 1): "write", (X86_64, 59): "execve", (X86_64, 83): "mkdir",
         (X86_64, 157): "prctl", (X86_64, 165): "mount", (X86_64, 155): "pivot_root", (I386, 20): "getpid"}


def fake_name_of(arch: Arch, nr: int) -> str | None:
    return NAMES.get((arch, nr))


def t(**names: int) -> Tally:
    return Tally(by_arch={"x86_64": dict(sorted(names.items()))})


class TestTally:
    def test_names_per_arch_and_unknown_numbers_kept(self) -> None:
        counts = {(X86_64, 0): 3, (X86_64, 1): 0, (I386, 20): 2, (X86_64, 999): 4, (X86_64, -1): 1}
        result = tally(counts, fake_name_of)
        assert result.by_arch == {"i386": {"getpid": 2}, "x86_64": {"read": 3}}
        assert result.unknown == {"x86_64": {-1: 1, 999: 4}}
        assert result.names() == {"getpid", "read"}
        assert result.total == 10

    def test_with_libseccomp(self) -> None:
        result = tally({(X86_64, 157): 1, (I386, 20): 1}, name_of)
        assert result.by_arch == {"i386": {"getpid": 1}, "x86_64": {"prctl": 1}}


class TestBuild:
    def test_trimmed_at_the_anchor(self) -> None:
        out = build(t(prctl=2, execve=1, write=3), t(mount=30, pivot_root=1, write=1),
                    native=X86_64, trim=True, anchored=True)
        assert out.profile.named() == {"prctl", "execve", "write"}
        assert out.excluded == ("mount", "pivot_root")  # write is in the profile anyway
        assert out.warnings == ()
        assert out.profile.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
        assert out.profile.default_action == "SCMP_ACT_ERRNO"

    def test_anchor_never_seen_keeps_everything_and_says_so(self) -> None:
        out = build(Tally(), t(mount=3, execve=1), native=X86_64, trim=True, anchored=False)
        assert out.profile.named() == {"mount", "execve"}
        assert out.excluded == ()
        assert any("no prctl" in w for w in out.warnings)

    def test_keep_mode(self) -> None:
        out = build(t(execve=1, mount=2), Tally(), native=X86_64, trim=False, anchored=False)
        assert out.profile.named() == {"execve", "mount"}
        assert out.warnings == ()

    def test_nothing_recorded(self) -> None:
        with pytest.raises(NothingRecordedError, match="nothing was written"):
            build(Tally(), Tally(), native=X86_64, trim=True, anchored=True)
        # Only unknown numbers: still nothing a profile can list.
        with pytest.raises(NothingRecordedError):
            build(Tally(unknown={"x86_64": {999: 1}}), Tally(), native=X86_64, trim=True, anchored=True)

    def test_unknown_numbers_are_warned_about(self) -> None:
        counted = Tally(by_arch={"x86_64": {"execve": 1}}, unknown={"x86_64": {999: 2}})
        out = build(counted, Tally(), native=X86_64, trim=True, anchored=True)
        assert any("999" in w and "no name in libseccomp" in w for w in out.warnings)

    def test_input_profile_extends_and_a_blocked_syscall_stays_blocked(self) -> None:
        base = prof.parse({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"},
            ],
        })
        recorded = t(execve=1, mkdir=1, write=1)
        out = build(recorded, Tally(), native=X86_64, trim=True, anchored=True, base=base)
        rules = [(r.names, r.action, r.errno_ret) for r in out.profile.syscalls]
        assert rules == [
            (("mkdir",), "SCMP_ACT_ERRNO", 13),
            (("getcwd",), "SCMP_ACT_ALLOW", None),
            (("execve", "write"), "SCMP_ACT_ALLOW", None),
        ]
        assert any("mkdir" in w for w in out.warnings)
        assert out.profile.architectures[0] == "SCMP_ARCH_X86_64"


def test_metadata_document() -> None:
    counted, before = t(execve=1, prctl=2), t(mount=3)
    out = build(counted, before, native=X86_64, trim=True, anchored=True)
    meta = metadata(
        container_id="abc",
        annotations={"io.kubernetes.container.name": "web", "io.kubernetes.pod.name": "p",
                     "io.kubernetes.pod.namespace": "ns", "io.kubernetes.pod.uid": "u"},
        key="io.containers.trace-syscall",
        runtime="crun",
        backend="core",
        started="2026-01-01T00:00:00.000Z",
        ended="2026-01-01T00:00:01.000Z",
        seconds=1.23456,
        output="/r/p.json",
        input_path=None,
        runtime_init="trim",
        anchored=True,
        counted=counted,
        before=before,
        outcome=out,
        version="0.1.0",
    )
    assert json.loads(json.dumps(meta)) == meta
    who = (meta["containerID"], meta["container"], meta["pod"], meta["namespace"])
    assert who == ("abc", "web", "p", "ns")
    assert meta["syscalls"] == {"x86_64": {"execve": 1, "prctl": 2}}
    assert meta["runtimeInit"]["excluded"] == ["mount"]
    assert meta["runtimeInit"]["before"] == {"x86_64": {"mount": 3}}
    assert meta["allowed"] == 2 and meta["seconds"] == 1.235
