"""EventAssembler: joins, the completion rule, order, bounds, and restarting from pending_position()."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syscribe.arch import Arch
from syscribe.enricher import events as eventsmod
from syscribe.enricher.events import AuditEvent, EventAssembler


def namer(arch: Arch, number: int) -> str | None:
    return f"{arch.name}:{number}"


def seccomp(serial: int, pid: int = 100, nr: int = 3, node: str = "") -> bytes:
    prefix = f"node={node} " if node else ""
    return (
        f"{prefix}type=SECCOMP msg=audit(1700000000.{serial % 1000:03d}:{serial}): auid=4294967295 uid=0 "
        f'gid=0 ses=4294967295 pid={pid} comm="sh" exe="/bin/busybox" sig=0 arch=c000003e syscall={nr} '
        f"compat=0 ip=0x47b567 code=0x7ffc0000\n"
    ).encode()


def avc(serial: int, pid: int = 200, node: str = "") -> bytes:
    prefix = f"node={node} " if node else ""
    return (
        f'{prefix}type=AVC msg=audit(1700000000.{serial % 1000:03d}:{serial}): apparmor="DENIED" '
        f'operation="open" profile="p" name="/etc/shadow" pid={pid} comm="cat" requested_mask="r" '
        f'denied_mask="r" fsuid=0 ouid=0\n'
    ).encode()


def syscall(serial: int, pid: int = 200, nr: int = 257, node: str = "", comm: str = "cat") -> bytes:
    prefix = f"node={node} " if node else ""
    return (
        f"{prefix}type=SYSCALL msg=audit(1700000000.{serial % 1000:03d}:{serial}): arch=c000003e "
        f"syscall={nr} success=no exit=-13 a0=ffffff9c a1=7ffd a2=0 a3=0 items=1 ppid=1 pid={pid} "
        f"auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 "
        f'tty=pts0 ses=3 comm="{comm}" exe="/usr/bin/cat" key="k"\n'
    ).encode()


def companion(kind: str, serial: int, body: str, node: str = "") -> bytes:
    prefix = f"node={node} " if node else ""
    return f"{prefix}type={kind} msg=audit(1700000000.{serial % 1000:03d}:{serial}): {body}\n".encode()


def eoe(serial: int, node: str = "") -> bytes:
    return companion("EOE", serial, "", node)


NOISE = b"type=USER_ACCT msg=audit(1700000000.000:1): pid=1 uid=0 msg='op=PAM:accounting res=success'\n"


def run(lines: list[bytes], **options: object) -> tuple[list[AuditEvent], EventAssembler]:
    assembler = EventAssembler(namer=namer, **options)  # type: ignore[arg-type]
    out: list[AuditEvent] = []
    for position, line in enumerate(lines):
        out += assembler.feed(line, position, 0.0)
    return out + assembler.flush(), assembler


def test_eoe_completes_at_once_with_companions_joined() -> None:
    assembler = EventAssembler(namer=namer)
    assert assembler.feed(avc(7), "a", 0.0) == []
    assert assembler.feed(syscall(7), "b", 0.0) == []
    assert assembler.feed(companion("CWD", 7, 'cwd="/root"'), "c", 0.0) == []
    assert assembler.feed(companion("PATH", 7, 'item=0 name="/etc/shadow" inode=1'), "d", 0.0) == []
    assert assembler.feed(companion("PATH", 7, 'item=1 name=2F746D70 inode=2'), "e", 0.0) == []
    assert assembler.feed(companion("EXECVE", 7, 'argc=2 a0="cat" a1=2F6574632F736861646F77'), "f", 0.0) == []
    title = companion("PROCTITLE", 7, "proctitle=636174002F6574632F736861646F77")
    assert assembler.feed(title, "g", 0.0) == []
    assert assembler.pending_position() == "a"
    (event,) = assembler.feed(eoe(7), "h", 0.0)
    assert assembler.pending_position() is None and assembler.pending == 0
    # The AVC's own fields win; its SYSCALL fills what it has not (arch, syscall, exe, uid, auid).
    assert (event.kind, event.pid, event.comm, event.action) == ("apparmor", 200, "cat", "DENIED")
    assert (event.arch.name if event.arch else None, event.syscall, event.syscall_name) == (
        "x86_64", 257, "x86_64:257")
    assert (event.exe, event.uid, event.auid) == ("/usr/bin/cat", 1000, 1000)
    assert event.details["cwd"] == "/root"
    assert event.details["path0"] == "/etc/shadow" and event.details["path1"] == "/tmp"
    assert event.details["argv"] == "cat /etc/shadow"
    assert event.details["proctitle"] == "cat /etc/shadow"
    assert event.details["ppid"] == "1" and event.details["success"] == "no" and event.details["key"] == "k"
    assert event.details["name"] == "/etc/shadow"  # the AVC's own, not overwritten
    stats = assembler.stats
    assert (stats.completed_eoe, stats.companions_joined, stats.events) == (1, 6, 1)


def test_main_record_wins_over_its_syscall() -> None:
    (event,), _ = run([seccomp(1, pid=5, nr=3), syscall(1, pid=6, nr=4, comm="other"), eoe(1)])
    assert (event.pid, event.syscall, event.comm) == (5, 3, "sh")


def test_events_leave_in_the_order_of_their_first_record() -> None:
    assembler = EventAssembler(namer=namer)
    assert assembler.feed(seccomp(1, pid=1), 0, 0.0) == []
    assert assembler.feed(seccomp(2, pid=2), 1, 0.0) == []
    assert assembler.feed(eoe(2), 2, 0.0) == []  # 2 is complete, but 1 is first
    assert assembler.pending_position() == 0
    assert [e.pid for e in assembler.feed(eoe(1), 3, 0.0)] == [1, 2]


def test_hold_by_lines() -> None:
    assembler = EventAssembler(namer=namer, hold_lines=5)
    assert assembler.feed(seccomp(1), 0, 0.0) == []
    for position in range(1, 5):
        assert assembler.feed(NOISE, position, 0.0) == []
    (event,) = assembler.feed(NOISE, 5, 0.0)
    assert event.audit_id == "1700000000.001:1"
    assert assembler.stats.completed_hold == 1


def test_hold_by_time_through_flush_and_deadline() -> None:
    assembler = EventAssembler(namer=namer, hold_seconds=0.25)
    assert assembler.next_deadline() is None
    assert assembler.feed(seccomp(1), 0, 100.0) == []
    assert assembler.next_deadline() == 100.25
    assert assembler.flush(100.1) == []
    assert len(assembler.flush(100.25)) == 1
    assert assembler.next_deadline() is None
    # A line fed later on the clock releases it too.
    assert assembler.feed(seccomp(2), 1, 200.0) == []
    assert len(assembler.feed(NOISE, 2, 201.0)) == 1


def test_deadline_of_a_complete_event_is_now() -> None:
    assembler = EventAssembler(namer=namer)
    assembler.feed(seccomp(1), 0, 10.0)
    assembler.feed(seccomp(2), 1, 10.1)
    assembler.feed(eoe(2), 2, 10.1)
    assert assembler.next_deadline() == 10.25
    assert len(assembler.feed(eoe(1), 3, 10.1)) == 2


def test_flush_none_emits_everything() -> None:
    events, assembler = run([seccomp(1), seccomp(2), eoe(2)], hold_lines=100)
    assert [e.audit_id.split(":")[1] for e in events] == ["1", "2"]
    assert (assembler.stats.completed_flush, assembler.stats.completed_eoe) == (1, 1)


def test_max_pending_evicts_the_oldest() -> None:
    assembler = EventAssembler(namer=namer, max_pending=2, hold_lines=100)
    assert assembler.feed(seccomp(1), 0, 0.0) == []
    assert assembler.feed(seccomp(2), 1, 0.0) == []
    (evicted,) = assembler.feed(seccomp(3), 2, 0.0)
    assert evicted.audit_id.endswith(":1")
    assert assembler.stats.completed_evicted == 1 and assembler.pending == 2
    # Its companion, now late, is counted, not joined.
    assembler.feed(syscall(1), 3, 0.0)
    assert assembler.stats.companions_late == 1


def test_several_main_records_of_one_syscall_share_its_companions() -> None:
    events, _ = run([avc(5), avc(5, pid=200), seccomp(5, pid=200, nr=2), syscall(5), eoe(5)])
    assert [e.kind for e in events] == ["apparmor", "apparmor", "seccomp"]
    assert [e.exe for e in events] == ["/usr/bin/cat", "/usr/bin/cat", "/bin/busybox"]
    assert [e.syscall for e in events] == [257, 257, 2]


def test_a_second_main_record_keeps_its_own_place() -> None:
    # 1's second record comes after 2's first: it leaves after 2, and a restart from
    # pending_position() while 2 is pending never brings 1's first record back.
    assembler = EventAssembler(namer=namer)
    out = assembler.feed(avc(1, pid=10), 0, 0.0) + assembler.feed(seccomp(2, pid=20), 1, 0.0)
    out += assembler.feed(avc(1, pid=11), 2, 0.0) + assembler.feed(eoe(1), 3, 0.0)
    assert [e.pid for e in out] == [10]
    assert assembler.pending_position() == 1
    assert [e.pid for e in assembler.feed(eoe(2), 4, 0.0)] == [20, 11]


def test_same_audit_id_from_two_nodes_is_two_events() -> None:
    events, _ = run([avc(1, node="a"), avc(1, pid=300, node="b"), syscall(1, node="b"), eoe(1, "a"),
                     eoe(1, "b")])
    assert [(e.node, e.pid, e.exe) for e in events] == [("a", 200, None), ("b", 300, "/usr/bin/cat")]


def test_companions_without_a_pending_event() -> None:
    events, assembler = run([syscall(1), companion("PROCTITLE", 2, "proctitle=6C73"), seccomp(2), eoe(2)])
    assert len(events) == 1
    assert "proctitle" not in events[0].details  # it came before its event: not joined
    assert assembler.stats.companions_unjoined == 2


def test_reused_audit_id_after_completion_is_a_new_event() -> None:
    events, _ = run([seccomp(1, pid=1), eoe(1), seccomp(1, pid=2), syscall(1, pid=2), eoe(1)])
    assert [(e.pid, e.details.get("ppid")) for e in events] == [(1, None), (2, "1")]


def test_companions_per_event_are_bounded() -> None:
    paths = [companion("PATH", 1, f'item={i} name="/p{i}"') for i in range(eventsmod.MAX_COMPANIONS + 4)]
    (event,), assembler = run([seccomp(1), *paths, eoe(1)])
    assert assembler.stats.companions_dropped == 4
    assert sorted(k for k in event.details if k.startswith("path")) == [f"path{i}" for i in range(8)]


def test_line_endings_and_counters() -> None:
    events, assembler = run([seccomp(1).rstrip(b"\n") + b"\r\n", b"\n", b"", b"garbage\n", eoe(1)])
    assert len(events) == 1
    stats = assembler.stats.as_dict()
    assert stats["lines"] == 5 and stats["non_audit"] == 3 and stats["events"] == 1
    assert stats["by_type"] == {"SECCOMP": 1, "EOE": 1}
    assert stats["unhandled"] == {}


def test_a_failing_namer_is_counted_not_fatal() -> None:
    def broken(arch: Arch, number: int) -> str | None:
        raise OSError("no libseccomp")

    assembler = EventAssembler(namer=broken)
    (event,) = assembler.feed(seccomp(1), 0, 0.0) + assembler.flush()
    assert (event.syscall, event.syscall_name) == (3, None)
    assert assembler.stats.namer_errors == 1


@pytest.mark.parametrize(
    "options",
    [{"hold_seconds": -1}, {"hold_seconds": float("nan")}, {"max_pending": 0}, {"hold_lines": 0}],
)
def test_bad_options(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        EventAssembler(**options)  # type: ignore[arg-type]


# --- restart from a checkpoint: nothing lost, nothing twice ---------------------------------------

# A log: each event is its main record(s), then maybe SYSCALL, PROCTITLE and EOE; events interleave.
EVENT = st.tuples(
    st.integers(1, 3),  # main records
    st.booleans(),  # companions
    st.booleans(),  # EOE
)


@st.composite
def logs(draw: st.DrawFn) -> list[bytes]:
    plans = draw(st.lists(EVENT, min_size=1, max_size=25))
    streams: list[list[bytes]] = []
    for serial, (mains, companions, end) in enumerate(plans, start=1):
        records = [avc(serial, pid=serial * 10 + i) for i in range(mains)]
        if companions:
            records += [syscall(serial), companion("PROCTITLE", serial, "proctitle=6C73")]
        if end:
            records.append(eoe(serial))
        streams.append(records)
    # Interleave the events as concurrent CPUs do, keeping each event's own order.
    out: list[bytes] = []
    while any(streams):
        live = [s for s in streams if s]
        pick = draw(st.integers(0, min(len(live) - 1, 2)))
        out.append(live[pick].pop(0))
        if draw(st.booleans()):
            out.append(NOISE)
    return out


def identity(event: AuditEvent) -> tuple[str, int | None]:
    return (event.audit_id, event.pid)


@settings(max_examples=300, deadline=None)
@given(lines=logs(), cut=st.integers(0, 10**6), hold_lines=st.integers(1, 12), max_pending=st.integers(1, 8))
def test_restart_from_pending_position_loses_and_repeats_nothing(
    lines: list[bytes], cut: int, hold_lines: int, max_pending: int
) -> None:
    cut %= len(lines) + 1
    options = {"hold_lines": hold_lines, "max_pending": max_pending}
    whole, _ = run(lines, **options)

    first = EventAssembler(namer=namer, hold_lines=hold_lines, max_pending=max_pending)
    before: list[AuditEvent] = []
    for position, line in enumerate(lines[:cut]):
        before += first.feed(line, position, 0.0)
    checkpoint = first.pending_position()
    resume = cut if checkpoint is None else checkpoint
    assert isinstance(resume, int) and resume <= cut
    after, _ = run(lines[resume:], **options)

    mains = sum(1 for line in lines if b"type=AVC" in line)
    assert len(whole) == mains
    assert sorted(map(identity, before + after)) == sorted(map(identity, whole))
