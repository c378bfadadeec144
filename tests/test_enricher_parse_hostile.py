"""Broken, hostile and huge input: the parser never raises, keeps its bounds, and costs linear time.

A quadratic path would not finish on the 10 MB lines below within the run's timeout; memory is measured
with tracemalloc (no timing assertions here: timing bounds belong in bench/).
"""

from __future__ import annotations

import tracemalloc

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syscribe.arch import Arch
from syscribe.enricher import auditparse, enrichedline
from syscribe.enricher.events import MAX_TYPE_KEYS, AuditEvent, EventAssembler

MB = 1024 * 1024
HEADER = b"type=SECCOMP msg=audit(1700000000.123:42): "
SECCOMP = (
    HEADER + b'auid=4294967295 uid=0 gid=0 ses=4294967295 subj==cri-containerd.apparmor.d (enforce) '
    b'pid=6514 comm="runc:[2:INIT]" exe=2F62696E2F6C73 sig=0 arch=c000003e syscall=3 compat=0 '
    b'ip=0x40828e code=0x7ffc0000\x1dAUID="unset" UID="root"'
)
SAMPLES = [
    SECCOMP,
    b"Jul  8 10:31:23 host kernel: [  270.853767][  T55] audit: type=1326 audit(1625740283.502:574): "
    b'auid=4294967295 uid=0 pid=4709 comm="sh" exe="/bin/busybox" sig=0 arch=c00000b7 syscall=13 '
    b"compat=0 ip=0x7f3c012e467b code=0x80000000AUID=\"unset\"",
    b"type=AVC msg=audit(1.2:3): avc:  denied  { read write } for  pid=13010 comm=\"pickup\" "
    b"scontext=system_u:system_r:t:s0 tcontext=system_u:object_r:u:s0 tclass=dir",
    b'<5>Jan  4 18:02:26 n37 kernel: audit: type=1400 audit(1.2:3): apparmor="ALLOWED" operation="open" '
    b'profile=2F686F6D65 name="/x" pid=9 comm="ping" requested_mask="rm"',
    b"node=n1 type=SYSCALL msg=audit(1.2:3): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 "
    b'a3=4 items=2 ppid=1 pid=9 auid=1 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 '
    b'ses=1 comm="x" exe="/x" key=(null)\x1dARCH=x86_64',
    b"type=PROCTITLE msg=audit(1.2:3): proctitle=536f6d6552616e646f6d",
    b"type=EOE msg=audit(1.2:3): ",
]


def namer(arch: Arch, number: int) -> str | None:
    return f"{arch.name}:{number}"


def check_event(event: AuditEvent) -> None:
    """What every event holds, whatever came in: right types, bounded, serialisable."""
    assert event.kind in ("seccomp", "selinux", "apparmor")
    for value in (event.pid, event.uid, event.auid, event.syscall, event.errno):
        assert value is None or (isinstance(value, int) and 0 <= value <= 0xFFFFFFFF)
    assert isinstance(event.timestamp, float)
    assert len(event.details) <= auditparse.MAX_FIELDS + 16
    for key, value in event.details.items():
        assert isinstance(key, str) and isinstance(value, str)
        assert len(value) <= auditparse.MAX_VALUE
    for value in (event.comm, event.exe, event.node, event.action):
        assert value is None or len(value) <= auditparse.MAX_VALUE
    # Whatever bytes came in, the strings are valid for JSON (no lone surrogates).
    orjson.dumps({"details": dict(event.details), "comm": event.comm, "exe": event.exe,
                  "node": event.node, "action": event.action})


def feed_all(lines: list[bytes], **options: int) -> tuple[list[AuditEvent], EventAssembler]:
    """The general way's events (checked), after the same lines the pipeline's way (SECCOMP records that
    go out alone) gave valid events too, and, for one line, the very same enriched line."""
    results = []
    for alone in (True, False):
        assembler = EventAssembler(namer=namer, seccomp_alone=alone, **options)
        out: list[AuditEvent] = []
        for position, line in enumerate(lines):
            out += assembler.feed(line, position, float(position))
        out += assembler.flush()
        for event in out:
            check_event(event)
        assert assembler.stats.lines == len(lines)
        results.append((out, assembler))
    (alone_events, _), (events, _) = results
    if len(lines) == 1:
        assert enriched(alone_events) == enriched(events)
    return results[1]


def enriched(events: list[AuditEvent]) -> list[bytes]:
    return [enrichedline.encode(enrichedline.build_record(e, None, "node")) for e in events]


FIELD = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=12)


@settings(max_examples=500, deadline=None)
@given(comm=FIELD, exe=FIELD, subj=FIELD, pid=st.from_regex(r"\d{1,12}", fullmatch=True),
       tail=st.sampled_from(["", "\x1dAUID=\"x\"", " x=1", "AUID=1", "\r\n", "\x00"]),
       prefix=st.sampled_from(["", "node=n1 ", "Jul  8 10:31:23 h kernel: audit: "]))
def test_seccomp_records_with_hostile_values_give_the_same_line_both_ways(
    comm: str, exe: str, subj: str, pid: str, tail: str, prefix: str
) -> None:
    line = (
        f'{prefix}type=SECCOMP msg=audit(1700000000.001:7): auid=1 uid=2 gid=3 ses=4 subj={subj} pid={pid} '
        f'comm="{comm}" exe={exe.encode().hex().upper()} sig=0 arch=c000003e syscall=59 compat=0 ip=0x1 '
        f"code=0x7ffc0000{tail}"
    ).encode()
    feed_all([line])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise(lines: list[bytes]) -> None:
    feed_all(lines)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 3000), st.binary(max_size=300))
def test_arbitrary_netlink_messages_never_raise(type_number: int, payload: bytes) -> None:
    assembler = EventAssembler(namer=namer)
    for event in assembler.feed_netlink(type_number, payload, 0, 0.0) + assembler.flush():
        check_event(event)
    assert auditparse.parse_netlink(type_number, payload) is None or type_number in auditparse.BY_NUMBER


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    """Real-looking records cut short, with bytes spliced in or replaced."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        line = bytearray(draw(st.sampled_from(SAMPLES)))
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(line)))
            action = draw(st.sampled_from(["cut", "insert", "replace"]))
            junk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b'"', b"'", b"=", b" ", b"\x1d", b"\x00", b"\xff\xfe", b"(", b")", b":", b"type=", b"0x"]))
            if action == "cut":
                del line[at:]
            elif action == "insert":
                line[at:at] = junk
            else:
                line[at : at + len(junk)] = junk
        out.append(bytes(line))
    return out


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_records_never_raise(lines: list[bytes]) -> None:
    feed_all(lines)
    for line in lines:
        record = auditparse.parse_line(line)
        if record is not None:
            assert all(len(v) <= auditparse.MAX_VALUE for v in record.fields.values())


@pytest.mark.parametrize("cut", range(0, len(SECCOMP) + 1, 7))
def test_a_record_cut_anywhere(cut: int) -> None:
    events, assembler = feed_all([SECCOMP[:cut]])
    stats = assembler.stats
    assert len(events) + stats.malformed + stats.non_audit + sum(stats.unhandled.values()) == 1
    if events:
        assert events[0].audit_id == "1700000000.123:42"


def test_invalid_utf8_everywhere() -> None:
    line = (
        b"Jan  1 00:00:00 h\xff kernel: audit: type=1326 audit(1.2:3): auid=4294967295 uid=0 gid=0 "
        b'ses=1 pid=7 comm="\xc3\x28\xff" exe="/bin/\xed\xa0\x80x" sig=0 arch=c000003e syscall=3 '
        b"compat=0 ip=0x1 code=0x7ffc0000 name=\xf0\x9f\x98 subj=\x80\x81"
    )
    (event,), _ = feed_all([line])
    assert event.comm == "\\xc3(\\xff" and event.exe == "/bin/\\xed\\xa0\\x80x"
    assert event.node is None  # not a host name
    assert event.details["subj"] == "\\x80\\x81"


def test_unbounded_kinds_of_garbage_type_tokens_are_counted_in_bounded_space() -> None:
    lines = [f"type=T{i} msg=audit(1.2:3): x=1".encode() for i in range(MAX_TYPE_KEYS * 3)]
    lines.append(b"type=" + b"A" * 5000 + b" msg=audit(1.2:3): x=1")
    _, assembler = feed_all(lines)
    assert len(assembler.stats.type_tokens) <= MAX_TYPE_KEYS + 1
    assert sum(assembler.stats.by_type.values()) == len(lines)


@pytest.mark.parametrize(
    "value",
    ["9" * 30, "9" * 5000, "-1", "+5", " 5", "0x10", "1e3", "\uff15"],  # the last: a full-width 5
)
def test_hostile_numbers(value: str) -> None:
    line = SECCOMP.replace(b"pid=6514", f"pid={value}".encode()).replace(
        b"syscall=3", f"syscall={value}".encode())
    (event,), _ = feed_all([line])
    assert event.pid is None and event.syscall is None and event.syscall_name is None


def huge(kind: str) -> bytes:
    """Lines of about 10 MB shaped to hit each scanner's worst case."""
    size = 10 * MB
    shapes = {
        "garbage": b"\xff\x00 =\"'" * (size // 6),
        "no-header": b"type=SECCOMP " + b"x" * size,
        "token": b"type=" + b"S" * size,
        "prefix": b"Jan  1 00:00:00 " + b"h" * size + b" kernel: " + SECCOMP,
        "fields": HEADER + b"a=b " * (size // 4),
        "one-word": HEADER + b"a" * size,
        "one-value": HEADER + b"exe=" + b"41" * (size // 2),
        "quotes": HEADER + b'a="' * (size // 3),
        "single-quotes": HEADER + b"a='" * (size // 3),
        "words": HEADER + b"subj=x" + b" (y)" * (size // 4),
        "equals": HEADER + b"=" * size,
        "upper": HEADER + b"code=0x" + b"A" * size,
        "glued": HEADER + b"code=0x0" + b"AUIDAUIDAUIDAUID" * (size // 16) + b"=",
        "avc": b"type=AVC msg=audit(1.2:3): avc:  denied  { " + b"read " * (size // 5),
        "spaces": b"type=SECCOMP" + b" " * size + b"msg=audit(1.2:3): pid=1",
        "eoe-id": b"type=EOE msg=audit(" + b"1" * size,
    }
    return shapes[kind]


@pytest.mark.parametrize(
    "kind",
    ["garbage", "no-header", "token", "prefix", "fields", "one-word", "one-value", "quotes",
     "single-quotes", "words", "equals", "upper", "glued", "avc", "spaces", "eoe-id"],
)
def test_ten_megabyte_lines(kind: str) -> None:
    line = huge(kind)
    assert len(line) >= 10 * MB - 16
    assembler = EventAssembler(namer=namer)
    # A pending event first, so that companion lines are looked at too.
    assembler.feed(SECCOMP, 0, 0.0)
    tracemalloc.start()
    try:
        events = assembler.feed(line, 1, 0.0) + assembler.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What is kept of a record is bounded by MAX_BODY, not by the line: a few MiB at most.
    assert peak < 8 * MB, f"{kind}: peak {peak / MB:.1f} MiB"
    for event in events:
        check_event(event)
    assert events[0].audit_id == "1700000000.123:42"
    if kind in ("fields", "one-word", "one-value", "quotes", "words", "equals", "upper", "glued"):
        assert assembler.stats.truncated == 1
        assert len(events) == 2


def test_a_ten_megabyte_record_keeps_its_first_fields() -> None:
    line = HEADER + b'pid=77 comm="big" ' + b"x=y " * (10 * MB // 4)
    (event,), assembler = feed_all([line])
    assert (event.pid, event.comm) == (77, "big")
    assert assembler.stats.truncated == 1
    assert len(event.details) <= auditparse.MAX_FIELDS
