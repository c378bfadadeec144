"""Every line of the corpus (tests/data/audit-samples.txt, provenance in tests/data/README.md) against
what it should give.

The expectations below were worked out by reading each line, not by running the parser; syscall names
were cross-checked against libseccomp's tables for the record's own architecture (an i386 132 is getpgid,
x86_64's 132 is utime; aarch64's 55 is fchown, x86_64's getsockopt). The table is in the corpus order;
each row names a fragment of its `# src:` line so that a changed corpus fails loudly, not silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from syscribe.enricher import auditparse
from syscribe.enricher.events import AuditEvent, EventAssembler
from tests.support.prereq import require

CORPUS = Path(__file__).parent / "data" / "audit-samples.txt"


@dataclass(frozen=True)
class Ev:
    """One event: its output type, host pid, arch name, syscall name, action."""

    kind: str
    pid: int | None
    arch: str | None
    syscall: str | None
    action: str | None


NOT = "not an event"  # no record we handle, an unhandled type, or a broken header
COMP = "companion"  # a SYSCALL / PROCTITLE / EXECVE / PATH record: joined, never an event of its own

SEC, SEL, AA = "seccomp", "selinux", "apparmor"
X64, I386, A64 = "x86_64", "i386", "aarch64"

# (fragment of the `# src:` line, expectation)
EXPECTED: list[tuple[str, Ev | str]] = [
    # seccomp-auditd
    ("test3.log:17", Ev(SEC, 11217, I386, "getpgid", "kill_thread")),  # code=0x0, i386 132
    ("audit_test.go:51", Ev(SEC, 2039886, X64, "close", "log")),  # 0x1D lost: code=0x7ffc0000AUID=
    ("audit_test.go:57", Ev(SEC, 72503, X64, "clone", "log")),
    ("utils_test.go:64", Ev(SEC, 3315793, X64, "fchmodat", "log")),  # subj==... (enforce)
    ("utils_test.go:116", Ev(SEC, 6412, X64, "fchmodat", "log")),
    # seccomp-kernel-syslog
    ("audit_test.go:39", Ev(SEC, 615549, X64, "write", "log")),
    ("audit_test.go:45", Ev(SEC, 4709, X64, "rt_sigaction", "log")),
    ("audit_test.go:118", Ev(SEC, 3109464, X64, "read", "log")),  # syscall=0
    ("utils_test.go:38", Ev(SEC, 699016, X64, "fcntl", "log")),  # [   T55] caller id
    ("utils_test.go:51", Ev(SEC, 698839, X64, "munmap", "log")),
    ("utils_test.go:77", Ev(SEC, 2684228, X64, "faccessat2", "log")),  # <5> PRI
    ("utils_test.go:90", Ev(SEC, 2045941, X64, "fchmodat", "log")),
    ("utils_test.go:103", Ev(SEC, 2159619, X64, "unshare", "log")),
    ("arm64 (arch=c00000b7)", Ev(SEC, 14974, A64, "fchown", "log")),
    ("aarch64 syscall 21", Ev(SEC, 14974, A64, "epoll_ctl", "log")),
    # near-miss-and-noise
    ("audit_test.go:63", NOT),  # type=1016
    ("audit_test.go:68", NOT),  # type=1326 with no audit(...) header
    ("audit_test.go:210", NOT),  # kauditd_printk_skb: callbacks suppressed
    ("syslog_other_02.in", NOT),  # __ratelimit
    ("avc_audit_invalid_audit_id.in", NOT),  # audit(12799====...8288.415:39)
    # selinux-avc
    ("auparse/testdata/test2.log:1", Ev(SEL, 13010, None, None, "denied")),
    ("auparse/test/test.log:1", Ev(SEL, 13010, None, None, "denied")),
    ("audit_test.go:74", Ev(SEL, 75593, None, None, "denied")),
    ("audit_test.go:80", Ev(SEL, 94509, None, None, "denied")),
    ("line-avc-denied.txt", Ev(SEL, 15381, None, None, "denied")),
    ("line-avc-granted.txt", Ev(SEL, 11209, None, None, "granted")),
    ("FilterAuditLine_TypeAvc, 1st literal", Ev(SEL, 1012, None, None, "denied")),
    ("avc.log-expected.json", Ev(SEL, 2465, None, None, "denied")),
    ("'log 1 pass ='", Ev(SEL, 13349, None, None, "denied")),
    # apparmor-auditd
    ("audit-ubuntu16.log:3", Ev(AA, 5571, None, None, "DENIED")),
    ("ubuntu-16.04-linux-4.13.0.yaml:10", Ev(AA, 26024, None, None, "AUDIT")),
    ("utils_test.go:149", Ev(AA, 3711187, None, None, "ALLOWED")),
    ("utils_test.go:155", Ev(AA, 1032907, None, None, "AUDIT")),
    ("utils_test.go:161", Ev(AA, 1032243, None, None, "DENIED")),
    ("utils_test.go:167", Ev(AA, 1032243, None, None, "DENIED")),
    ("0x1d-uppercase-FSUID-OUID.in", Ev(AA, 3483, None, None, "ALLOWED")),
    ("complex_profile_name.in", Ev(AA, 543, None, None, "DENIED")),
    ("testcase_encoded_comm.in", Ev(AA, 22918, None, None, "ALLOWED")),  # hex profile, name, comm
    ("ptrace_garbage_lp1689667_2.in", Ev(AA, 1962, None, None, "DENIED")),
    ("unbalanced_parenthesis.in", Ev(AA, 888, None, None, "DENIED")),
    ("testcase_unix_01.in", Ev(AA, 80819, None, None, "DENIED")),
    ("status-filesystem-enabled.in", Ev(AA, 1, None, None, "STATUS")),  # `audit.log:` grep prefix
    ("testcase_mount_02.in", Ev(AA, 26487, None, None, "ALLOWED")),
    ("line-broken-avc-info.txt", Ev(AA, 3981295, None, None, "STATUS")),
    # apparmor-kernel-syslog
    ("audit_test.go:86", Ev(AA, 4166, None, None, "DENIED")),
    ("audit_test.go:92", Ev(AA, 4166, None, None, "DENIED")),
    ("preprocessor_test.go:41", Ev(AA, 3711187, None, None, "ALLOWED")),
    ("avc_syslog_01.in", Ev(AA, 19651, None, None, "DENIED")),  # no `audit:` before type=1400
    ("syslog_audit_02.in", Ev(AA, 3231, None, None, "ALLOWED")),
    ("testcase_dbus_08.in", NOT),  # type=1107 USER_AVC: dbus-daemon's pid, the subject is inside msg=
    ("testcase_dmesg_capability.in", Ev(AA, 7292, None, None, "DENIED")),
    ("syslog_hostname_with_dot.in", Ev(AA, 28943, None, None, "ALLOWED")),
    ("testcase_socklogd_mkdir.in", Ev(AA, 2545, None, None, "ALLOWED")),
    ("testcase36.in", Ev(AA, 8119, None, None, "AUDIT")),
    ("change_onexec_gl636.in", Ev(AA, 6209, None, None, "DENIED")),
    ("testcase02.in", Ev(AA, 3593, None, None, "DENIED")),  # legacy type=1503
    ("testcase_userns_01.in", Ev(AA, 1785, None, None, "DENIED")),
    # apparmor-legacy-types
    ("old_style_log_01.in", Ev(AA, None, None, None, None)),  # free text, nothing to name
    ("testcase01.in", Ev(AA, 31938, None, None, "DENIED")),
    ("testcase25.in", Ev(AA, 20400, None, None, "HINT")),
    ("testcase35.in", Ev(AA, 5409, None, None, "AUDIT")),
    # syscall-proctitle-events
    ("ubuntu-16.04-linux-4.13.0.yaml:5", COMP),
    ("ubuntu-16.04-linux-4.13.0.yaml:6", COMP),
    ("auparse/testdata/test3.log:1 ", COMP),
    ("auparse/testdata/test3.log:2 ", COMP),
    ("auparse/testdata/test3.log:3 ", COMP),
    ("auparse/testdata/test3.log:4 ", COMP),
    ("auparse/test/test3.log:1 ", COMP),
    ("auparse/test/test3.log:3 ", COMP),
    ("auparse/test/test4.log:1 ", COMP),
    ("auparse/test/test4.log:7 ", COMP),
    ("record-perl-reverse-shell.txt:1", COMP),
    ("record-perl-reverse-shell.txt:2", COMP),
    ("record-perl-reverse-shell.txt:7", COMP),
    ("record-execve-long.txt:2", COMP),
    ("record-execve-long.txt:3", COMP),
    ("record-syscall-nullkey.txt:7", COMP),
    ("record-syscall-nullkey.txt:8", COMP),
    ("ubuntu-21.10-linux-5.13.yaml:8", COMP),
    ("line-syscall.txt:1", COMP),
    ("ubuntu-24.04-linux-6.8.0.yaml:5", COMP),
    ("lost_messages.log:1", COMP),
    ("rollover.log:2", COMP),
    ("rollover.log:3", COMP),
    ("filebeat/module/auditd/log/test/test.log:12", COMP),  # interpreted values, raw header
    ("filebeat/module/auditd/log/test/test.log:11", COMP),
    # hard-cases
    ("line-daemon-end-2.txt", NOT),
    ("line-broken-subj1.txt", COMP),
    ("line-broken-subj2.txt", COMP),
    ("record-ptrace.txt:1", COMP),
    ("line-user-avc-1.txt", NOT),
    ("line-unknown.txt", NOT),  # UNKNOWN[1334] is BPF
    ("audit-rhel7.log:31", NOT),  # UNKNOWN[1329] msg=?
    ("ubuntu-17.04-linux-4.10.0.yaml:53", COMP),
    ("record-nscd.txt:2", NOT),  # SOCKADDR
    ("'log 2 pass ='", NOT),  # a shipper joined CONFIG_CHANGE+SYSCALL+PROCTITLE: read as its first
    ("FilterAuditLine_TypeSyscall, 2nd literal", NOT),  # ausearch -i: local-time header
    ("FilterAuditLine_TypeAvc, 3rd literal", NOT),  # ausearch -i
    ("aarch64 KILL_PROCESS", Ev(SEC, 83658, A64, "msync", "kill_process")),  # code=0x80000000AUID=
    ("ausearch --interpret --message SECCOMP", NOT),  # ausearch -i: local-time header
]


def samples() -> list[tuple[str, bytes]]:
    """(src line, sample line) pairs, read as bytes: some samples hold a raw 0x1D."""
    out: list[tuple[str, bytes]] = []
    source = None
    for raw in CORPUS.read_bytes().split(b"\n"):
        if raw.startswith(b"# src:"):
            source = raw.decode("utf-8", "replace")
        elif raw and not raw.startswith(b"#"):
            assert source is not None, f"sample without a # src: line: {raw[:60]!r}"
            out.append((source, raw))
            source = None
    return out


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    return samples()


def test_table_covers_every_sample(corpus: list[tuple[str, bytes]]) -> None:
    assert len(corpus) == len(EXPECTED) == 100
    for (source, _), (fragment, _) in zip(corpus, EXPECTED, strict=True):
        assert fragment in source, f"table out of step with the corpus: {fragment!r} vs {source!r}"


def _alone(line: bytes) -> tuple[list[AuditEvent], EventAssembler]:
    assembler = EventAssembler()
    events = assembler.feed(line, 0, 0.0) + assembler.flush()
    return events, assembler


@pytest.mark.parametrize("index", range(len(EXPECTED)), ids=[f for f, _ in EXPECTED])
def test_sample(corpus: list[tuple[str, bytes]], index: int) -> None:
    require("libseccomp")
    _, line = corpus[index]
    expected = EXPECTED[index][1]
    events, assembler = _alone(line)
    record = auditparse.parse_line(line)
    if expected == NOT:
        assert events == []
        assert record is None or record.rtype.role != auditparse.MAIN
    elif expected == COMP:
        assert events == []
        assert record is not None and record.rtype.role == auditparse.COMPANION
    else:
        assert isinstance(expected, Ev)
        assert len(events) == 1, events
        event = events[0]
        got = Ev(event.kind, event.pid, event.arch.name if event.arch else None, event.syscall_name,
                 event.action)
        assert got == expected
        assert re.fullmatch(r"\d+\.\d+:\d+", event.audit_id)
    assert assembler.stats.lines == 1


@pytest.mark.parametrize("seccomp_alone", [False, True])
def test_whole_corpus_in_order(corpus: list[tuple[str, bytes]], seccomp_alone: bool) -> None:
    """Fed as one log: one event per event line, in file order; companions join their event. The same
    with the pipeline's SECCOMP records that go out alone."""
    require("libseccomp")
    assembler = EventAssembler(seccomp_alone=seccomp_alone)
    events: list[AuditEvent] = []
    for position, (_, line) in enumerate(corpus):
        events += assembler.feed(line + b"\n", position, 0.0)
    events += assembler.flush()
    wanted = [e for _, e in EXPECTED if isinstance(e, Ev)]
    got = [Ev(e.kind, e.pid, e.arch.name if e.arch else None, e.syscall_name, e.action) for e in events]
    # The docker-default AVC (61207) met its SYSCALL 32 lines later: it now names the syscall.
    docker = wanted.index(Ev(AA, 5571, None, None, "DENIED"))
    wanted[docker] = Ev(AA, 5571, X64, "read", "DENIED")
    assert got == wanted
    avc = events[docker]
    assert avc.exe == "/usr/share/metricbeat/metricbeat"
    assert avc.uid == 1000
    assert avc.details["proctitle"] == "metricbeat -e -system.hostfs=/hostfs -strict.perms=false"
    assert avc.details["profile"] == "docker-default"
    stats = assembler.stats
    assert stats.events == len(wanted)
    assert stats.lines == 100
    # Main records with a broken header: 1326 without one, the ====== id, two ausearch -i headers. (A
    # companion's header is looked at only when it could join a pending event.)
    assert stats.malformed == 4
    assert stats.unhandled["USER_AVC"] == stats.unhandled["1107"] == 1
    assert stats.by_type["SECCOMP"] == 18  # type=SECCOMP and type=1326 count together
