"""EventAssembler.feed_many (the batch path the pipeline uses) against feed() line by line, and both
against tests.support.reference_assembler, a slow, obvious assembler written from the rules alone (feed()
and feed_many() run the same code, so only an independent one can tell that code wrong).

feed_many looks at the queue head only when it can have become complete and keeps its counters in
locals; none of that may change a result. Hypothesis makes logs with interleaved events, reused audit
ids, late companions, several origins, malformed headers and hostile tokens, cuts them into batches
at random, and checks that both ways give the same events, released at the same lines, with the same
restart point, deadline and counters after every batch.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from syscribe.arch import Arch
from syscribe.enricher import auditparse
from syscribe.enricher.events import AuditEvent, EventAssembler
from tests.support.reference_assembler import ReferenceAssembler


def namer(arch: Arch, number: int) -> str | None:
    if number == 999:
        raise OSError("no libseccomp")  # a failing namer is counted, never cached
    return f"{arch.name}:{number}"


def stamp(serial: int) -> str:
    return f"audit(1700000000.{serial % 1000:03d}:{serial})"


def prefix(node: str) -> str:
    return f"node={node} " if node else ""


def seccomp(serial: int, pid: int, nr: int, node: str) -> bytes:
    return (
        f"{prefix(node)}type=SECCOMP msg={stamp(serial)}: auid=4294967295 uid=0 gid=0 ses=4294967295 "
        f'pid={pid} comm="sh" exe="/bin/busybox" sig=0 arch=c000003e syscall={nr} compat=0 ip=0x4 '
        "code=0x7ffc0000\x1dAUID=\"unset\""
    ).encode()


def avc(serial: int, pid: int, nr: int, node: str) -> bytes:
    return (
        f'{prefix(node)}type=AVC msg={stamp(serial)}: apparmor="DENIED" operation="open" profile="p" '
        f'name="/etc/shadow" pid={pid} comm="cat" requested_mask="r" denied_mask="r" fsuid=0 ouid=0'
    ).encode()


def kernel_number(serial: int, pid: int, nr: int, node: str) -> bytes:
    # printk's form: the type as a number, the header without msg=
    return (
        f"Jul  8 10:31:23 {node or 'host'} kernel: audit: type=1326 {stamp(serial)}: auid=0 uid=0 gid=0 "
        f"ses=1 pid={pid} comm=\"sh\" exe=\"/bin/sh\" sig=0 arch=c000003e syscall={nr} compat=0 ip=0x1 "
        "code=0x80000000"
    ).encode()


def unknown(serial: int, pid: int, nr: int, node: str) -> bytes:
    return (
        f"{prefix(node)}type=UNKNOWN[1326] msg={stamp(serial)}: auid=0 uid=0 gid=0 ses=1 pid={pid} "
        f'comm="sh" exe="/bin/sh" sig=0 arch=c000003e syscall={nr} compat=0 ip=0x1 code=0x50000'
    ).encode()


def syscall(serial: int, pid: int, nr: int, node: str) -> bytes:
    return (
        f"{prefix(node)}type=SYSCALL msg={stamp(serial)}: arch=c000003e syscall={nr} success=no exit=-13 "
        f"a0=1 a1=2 a2=3 a3=4 items=1 ppid=1 pid={pid} auid=1 uid=1 gid=1 euid=1 suid=1 fsuid=1 egid=1 "
        f'sgid=1 fsgid=1 tty=pts0 ses=3 comm="cat" exe="/bin/cat" key="k"'
    ).encode()


def companion(kind: str, body: str) -> object:
    def make(serial: int, pid: int, nr: int, node: str) -> bytes:
        return f"{prefix(node)}type={kind} msg={stamp(serial)}: {body}".encode()

    return make


MAKERS = {
    "seccomp": seccomp,
    "avc": avc,
    "kernel": kernel_number,
    "unknown": unknown,
    "syscall": syscall,
    "proctitle": companion("PROCTITLE", "proctitle=6C73002D6C"),
    "cwd": companion("CWD", 'cwd="/root"'),
    "path": companion("PATH", 'item=0 name="/etc/shadow" inode=1'),
    "execve": companion("EXECVE", 'argc=2 a0="ls" a1=2D6C'),
    "eoe": companion("EOE", ""),
}
ODD = [
    b"",
    b"no record here",
    b"type=USER_END msg=audit(1700000000.001:1): pid=1 uid=0 msg='op=PAM:session_close res=success'",
    b"type=SECCOMP msg=audit(garbage): pid=1",  # a handled type with a broken header
    b"type=EOE msg=audit(1700000000.001:1",  # a companion cut short
    b"type=SECCOMP",  # a token at the end of the line
    b"type=SECCOMP\r",
    b"type=EOE\n",
    b"type=" + b"X" * 40 + b" msg=audit(1.1:1): ",  # a token longer than the window
    b"xtype=SECCOMP msg=audit(1700000000.002:2): pid=5",  # the first type= wins, wherever it is
    b"\x00\xff type=\xff\xfe msg=audit(1.1:1): \x1d",
]

LINE = st.one_of(
    st.builds(
        lambda kind, serial, pid, nr, node: MAKERS[kind](serial, pid, nr, node),  # type: ignore[operator]
        st.sampled_from(sorted(MAKERS)),
        st.integers(1, 12),  # few serials: reused ids, late and foreign companions
        st.integers(1, 5),
        st.sampled_from([3, 59, 999]),
        st.sampled_from(["", "", "n1", "n2"]),
    ),
    st.sampled_from(ODD),
    st.binary(max_size=60),
)


def feed_each(
    feed: Callable[[bytes, int, float], list[AuditEvent]], lines: list[bytes], cuts: list[int],
    nows: list[float], after_batch: Callable[[], object],
) -> tuple[list[tuple[int, list[AuditEvent]]], list[object]]:
    """Each line through `feed` (the batch's clock), what each released, `after_batch()` per batch."""
    released: list[tuple[int, list[AuditEvent]]] = []
    states = []
    for (start, end), now in zip(zip([0, *cuts], [*cuts, len(lines)], strict=True), nows, strict=True):
        for position in range(start, end):
            events = feed(lines[position], position, now)
            if events:
                released.append((position, events))
        states.append(after_batch())
    return released, states


def by_line(
    lines: list[bytes], cuts: list[int], nows: list[float], options: dict[str, float | bool]
) -> tuple[list[tuple[int, list[AuditEvent]]], list[object], EventAssembler]:
    assembler = EventAssembler(namer=namer, **options)  # type: ignore[arg-type]
    released, states = feed_each(assembler.feed, lines, cuts, nows, lambda: state(assembler))
    return released, states, assembler


def by_batch(
    lines: list[bytes], cuts: list[int], nows: list[float], options: dict[str, float | bool]
) -> tuple[
    list[tuple[int, list[AuditEvent]]], list[tuple[object, ...]], EventAssembler, list[tuple[str | None, str]]
]:
    assembler = EventAssembler(namer=namer, **options)  # type: ignore[arg-type]
    released: list[tuple[int, list[AuditEvent]]] = []
    states = []
    mains: list[tuple[str | None, str]] = []
    for (start, end), now in zip(zip([0, *cuts], [*cuts, len(lines)], strict=True), nows, strict=True):
        released += assembler.feed_many(lines[start:end], start, now, mains=mains)
        states.append(state(assembler))
    return released, states, assembler, mains


def state(assembler: EventAssembler) -> tuple[object, ...]:
    return (
        assembler.pending_position(), assembler.pending, assembler.next_deadline(),
        assembler.stats.as_dict(),
    )


# A log, how it is cut into batches (data), and the assembler's settings.
LOG = {
    "lines": st.lists(LINE, max_size=60),
    "data": st.data(),
    "hold_lines": st.integers(1, 12),
    "max_pending": st.integers(1, 8),
    "hold_seconds": st.sampled_from([0.0, 0.25, 1e9]),
}


def batches(data: st.DataObject, lines: list[bytes]) -> tuple[list[int], list[float]]:
    """Where the log is cut into batches, and each batch's clock."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(lines)), max_size=6)))
    steps = data.draw(st.lists(st.sampled_from([0.0, 0.1, 0.3]), min_size=len(cuts) + 1,
                               max_size=len(cuts) + 1))
    return cuts, [sum(steps[: i + 1]) for i in range(len(steps))]


@settings(max_examples=400, deadline=None)
@given(**LOG, seccomp_alone=st.booleans())
def test_feed_many_is_feed_line_by_line(
    lines: list[bytes], data: st.DataObject, hold_lines: int, max_pending: int, hold_seconds: float,
    seccomp_alone: bool,
) -> None:
    cuts, nows = batches(data, lines)
    options = {"hold_lines": hold_lines, "max_pending": max_pending, "hold_seconds": hold_seconds,
               "seccomp_alone": seccomp_alone}

    expected, expected_states, one = by_line(lines, cuts, nows, options)
    got, got_states, many, mains = by_batch(lines, cuts, nows, options)
    assert got == expected
    assert got_states == expected_states
    assert many.flush(nows[-1] + 0.2) == one.flush(nows[-1] + 0.2)
    assert many.flush() == one.flush()
    assert many.stats.as_dict() == one.stats.as_dict()

    # `mains` names each main record taken, in order: what the parser makes of those lines.
    wanted = []
    for line in lines:
        record = auditparse.parse_line(line)
        if record is not None and record.rtype.role == auditparse.MAIN:
            wanted.append((record.fields.get("pid"), record.audit_id))
    assert mains == wanted


def test_feed_many_positions_and_release_lines() -> None:
    lines = [seccomp(1, 7, 3, ""), syscall(1, 7, 3, ""), MAKERS["eoe"](1, 7, 3, ""),  # type: ignore[operator]
             seccomp(2, 8, 59, ""), b"noise", b"noise"]
    assembler = EventAssembler(namer=namer, hold_lines=2)
    released = assembler.feed_many(lines, 100, 0.0)
    # The first event leaves at its EOE (position 102), the second when its line hold ends (105).
    assert [(position, [e.audit_id for e in events]) for position, events in released] == [
        (102, ["1700000000.001:1"]), (105, ["1700000000.002:2"])]
    assert released[0][1][0].details["key"] == "k"
    assert assembler.pending_position() is None and assembler.stats.lines == 6


def test_feed_many_empty_and_nothing_pending() -> None:
    assembler = EventAssembler(namer=namer)
    assert assembler.feed_many([], 0, 0.0) == []
    assert assembler.feed_many([b"noise"] * 3, 0, 0.0) == []
    assert (assembler.stats.lines, assembler.stats.non_audit) == (3, 3)


def test_a_failing_namer_is_counted_per_event_and_not_cached() -> None:
    assembler = EventAssembler(namer=namer, hold_lines=1)
    lines = [seccomp(i, 1, 999, "") for i in range(1, 4)] + [b"noise"]
    events = [e for _, batch in assembler.feed_many(lines, 0, 0.0) for e in batch]
    assert [(e.syscall, e.syscall_name) for e in events] == [(999, None)] * 3
    assert assembler.stats.namer_errors == 3


def test_feed_netlink_many_is_feed_netlink_one_by_one() -> None:
    body = (b"audit(1700000000.001:1): auid=0 uid=0 gid=0 ses=1 pid=5 comm=\"sh\" exe=\"/bin/sh\" sig=0 "
            b"arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000")
    messages = [(1326, body), (1300, b"audit(1700000000.001:1): arch=c000003e syscall=3 pid=5"),
                (1320, b"audit(1700000000.001:1): "), (1326, b"junk"), (1105, b"audit(1.1:2): x=1"),
                (1326, body.replace(b":1)", b":2)"))]
    one = EventAssembler(namer=namer)
    expected = []
    for position, (kind, payload) in enumerate(messages):
        events = one.feed_netlink(kind, payload, 10 + position, 0.0)
        if events:
            expected.append((10 + position, events))
    many = EventAssembler(namer=namer)
    mains: list[tuple[str | None, str]] = []
    got = many.feed_netlink_many([m[0] for m in messages], [m[1] for m in messages], 10, 0.0, mains=mains)
    assert got == expected and got[0][0] == 12
    assert many.flush() == one.flush()
    assert many.stats.as_dict() == one.stats.as_dict()
    assert mains == [("5", "1700000000.001:1"), ("5", "1700000000.001:2")]


def test_a_huge_batch_of_hostile_lines_keeps_the_bounds() -> None:
    # 50,000 main records with no companions: the queue never holds more than hold_lines of them.
    lines = [seccomp(i, i, 3, "") for i in range(1, 50_001)]
    assembler = EventAssembler(namer=namer, hold_lines=100, max_pending=10_000)
    released = assembler.feed_many(lines, 0, 0.0)
    assert assembler.pending <= 100
    assert sum(len(events) for _, events in released) + assembler.pending == 50_000
    long_line = b"type=SECCOMP msg=audit(1.1:1): " + b"a=" * 5_000_000
    assembler.feed_many([long_line, b"x" * 10_000_000], 50_000, 0.0)
    assert assembler.stats.truncated == 1


def by_reference(
    lines: list[bytes], cuts: list[int], nows: list[float], options: dict[str, float | bool]
) -> tuple[list[tuple[int, list[AuditEvent]]], list[object], ReferenceAssembler]:
    oracle = ReferenceAssembler(
        hold_seconds=float(options["hold_seconds"]), hold_lines=int(options["hold_lines"]),
        max_pending=int(options["max_pending"]), namer=namer,
    )
    released, pending = feed_each(oracle.feed, lines, cuts, nows, oracle.pending_position)
    return released, pending, oracle


@settings(max_examples=400, deadline=None)
@given(**LOG)
def test_feed_many_gives_what_the_reference_assembler_gives(
    lines: list[bytes], data: st.DataObject, hold_lines: int, max_pending: int, hold_seconds: float
) -> None:
    cuts, nows = batches(data, lines)
    options: dict[str, float | bool] = {
        "hold_lines": hold_lines, "max_pending": max_pending, "hold_seconds": hold_seconds}

    expected, expected_pending, oracle = by_reference(lines, cuts, nows, options)
    got, got_states, many, _ = by_batch(lines, cuts, nows, options)
    assert got == expected
    assert [s[0] for s in got_states] == expected_pending
    assert many.flush(nows[-1] + 0.2) == oracle.release(nows[-1] + 0.2)
    assert many.flush() == oracle.release(None)


def test_the_reference_assembler_joins_and_completes() -> None:
    """The oracle itself on a log worked out by hand: two events interleaved, one completed by its EOE,
    the other by its line hold; a companion of neither is not joined."""
    lines = [
        seccomp(1, 10, 3, ""), avc(2, 20, 0, ""), syscall(1, 10, 3, ""), syscall(3, 30, 3, ""),
        MAKERS["proctitle"](2, 20, 0, ""), MAKERS["eoe"](1, 10, 3, ""), b"noise",  # type: ignore[operator]
        b"noise", b"noise",
    ]
    oracle = ReferenceAssembler(hold_seconds=1e9, hold_lines=6, max_pending=10, namer=namer)
    released = [(i, oracle.feed(line, i, 0.0)) for i, line in enumerate(lines)]
    assert [(i, [(e.record_type, e.pid) for e in events]) for i, events in released if events] == [
        (5, [("SECCOMP", 10)]), (7, [("AVC", 20)])]
    (_, (first,)), (_, (second,)) = [r for r in released if r[1]]
    assert first.details["ppid"] == "1" and "proctitle" not in first.details
    assert second.details["proctitle"] == "ls -l" and "ppid" not in second.details
