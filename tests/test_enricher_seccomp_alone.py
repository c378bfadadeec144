"""EventAssembler(seccomp_alone=True), the pipeline's way: a SECCOMP record in the kernel's own format
goes out as soon as it is read, without waiting for companions, when no other event waits ahead of it.

Its enriched line takes nothing from companions, so the lines must be exactly those of the general way
(which holds it for its companions) on any log in the kernel's order; only the records that do not fit
the kernel's format, or that could take a field from a SYSCALL companion ((null) comm or exe), go the
general way.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syscribe.arch import Arch
from syscribe.enricher import enrichedline
from syscribe.enricher.events import AuditEvent, EventAssembler


def namer(arch: Arch, number: int) -> str | None:
    return f"{arch.name}:{number}"


def stamp(serial: int) -> str:
    return f"audit(1700000000.{serial % 1000:03d}:{serial})"


# SECCOMP records: the kernel's format in its envelopes, and shapes the general way must take.
SECCOMPS = {
    "auditd": 'type=SECCOMP msg={s}: auid=4294967295 uid=0 gid=0 ses=4294967295 pid={p} comm="sh" '
              'exe="/bin/busybox" sig=0 arch=c000003e syscall=59 compat=0 ip=0x4 code=0x7ffc0000',
    "enriched": "type=SECCOMP msg={s}: auid=1000 uid=0 gid=0 ses=3 "
                'subj=system_u:system_r:container_t:s0:c1,c2 pid={p} comm="sh" exe="/bin/dash" sig=0 '
                "arch=c000003e syscall=1 compat=0 ip=0x4 "
                'code=0x50000\x1dAUID="user" UID="root" ARCH=x86_64 SYSCALL=unknown-syscall(-1)',
    "node": 'node=n1 type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm="a b" exe="/x" sig=31 '
            "arch=40000003 syscall=20 compat=1 ip=0x1 code=0x80000000",
    "hex": "type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 subj==unconfined (enforce) pid={p} "
           "comm=6D79207368 exe=2F746D702F6D792073682D3F sig=0 arch=c000003e syscall=1073741863 compat=0 "
           "ip=0x1 code=0x0",
    "kmsg": "6,1234,5678,-;audit: type=1326 {s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm=\"sh\" "
            'exe="/bin/sh" sig=0 arch=c00000b7 syscall=56 compat=0 ip=0x1 code=0x7ffc0000',
    # the general way only:
    "null": "type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm=(null) exe=(null) sig=0 "
            "arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000",
    "syslog": "Jul  8 10:31:23 host kernel: audit: type=1326 {s}: auid=0 uid=0 gid=0 ses=1 pid={p} "
              'comm="sh" exe="/bin/sh" sig=0 arch=c000003e syscall=13 compat=0 ip=0x1 code=0x7ffc0000'
              '#035AUID="root"',
    "glued": 'type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm="sh" exe="/bin/sh" sig=0 '
             'arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000AUID="root"',
    "more": 'type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm="sh" exe="/bin/sh" sig=0 '
            "arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000 future=1",
    "gs_inside": 'type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm="s\x1dh" exe="/bin/sh" sig=0 '
                 "arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000",
    "old_kernel": "type=SECCOMP msg={s}: auid=0 uid=0 gid=0 ses=1 pid={p} comm=\"sh\" exe=\"/bin/sh\" "
                  "sig=0 syscall=3 compat=0 ip=0x1 code=0x50001",
    "huge_pid": 'type=SECCOMP msg={s}: auid=99999999999 uid=4294967296 gid=0 ses=1 pid=2147483648 comm="sh" '
                'exe="/bin/sh" sig=0 arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000',
}
AVC = ('type=AVC msg={s}: avc:  denied  {{ read }} for  pid={p} comm="cat" name="shadow" '
       "scontext=system_u:system_r:container_t:s0 tcontext=system_u:object_r:shadow_t:s0 tclass=file")
COMPANIONS = [
    "type=SYSCALL msg={s}: arch=c000003e syscall=257 success=no exit=-13 a0=1 a1=2 a2=3 a3=4 items=1 "
    'ppid=1 pid={p} auid=7 uid=7 gid=1 euid=1 suid=1 fsuid=1 egid=1 sgid=1 fsgid=1 tty=pts0 ses=3 '
    'comm="cat" exe="/bin/cat" key="k"',
    "type=PROCTITLE msg={s}: proctitle=636174",
]
EOE = "type=EOE msg={s}: "

EVENT = st.tuples(
    # main records: the kernel writes one SECCOMP record per syscall (its own audit id), several AVCs
    st.one_of(st.sampled_from(sorted(SECCOMPS)).map(lambda kind: [kind]),
              st.lists(st.just("avc"), min_size=1, max_size=2)),
    st.booleans(),  # companions
    st.booleans(),  # EOE
    st.integers(1, 4),  # pid
)


@st.composite
def logs(draw: st.DrawFn) -> list[bytes]:
    """Events in the kernel's order (main records, then companions, then EOE), interleaved, each with
    its own audit id."""
    plans = draw(st.lists(EVENT, min_size=1, max_size=20))
    streams: list[list[bytes]] = []
    for serial, (mains, companions, end, pid) in enumerate(plans, start=1):
        records = [(AVC if kind == "avc" else SECCOMPS[kind]).format(s=stamp(serial), p=pid)
                   for kind in mains]
        if companions:
            records += [c.format(s=stamp(serial), p=pid) for c in COMPANIONS]
        if end:
            records.append(EOE.format(s=stamp(serial)))
        streams.append([r.encode() for r in records])
    out: list[bytes] = []
    while any(streams):
        live = [s for s in streams if s]
        out.append(live[draw(st.integers(0, min(len(live) - 1, 2)))].pop(0))
        if draw(st.booleans()):
            out.append(b"type=USER_END msg=audit(1700000000.999:999): pid=1 res=success")
    return out


def lines_of(events: list[AuditEvent]) -> list[bytes]:
    return [enrichedline.encode(enrichedline.build_record(e, None, "node")) for e in events]


def run(
    lines: list[bytes], *, alone: bool, hold_lines: int, batch: int
) -> tuple[list[AuditEvent], EventAssembler]:
    assembler = EventAssembler(namer=namer, hold_lines=hold_lines, seccomp_alone=alone)
    events: list[AuditEvent] = []
    for at in range(0, len(lines), batch):
        for _, released in assembler.feed_many(lines[at : at + batch], at, 0.0):
            events += released
    return events + assembler.flush(), assembler


@settings(max_examples=300, deadline=None)
@given(lines=logs(), hold_lines=st.integers(1, 30), batch=st.integers(1, 50))
def test_the_lines_are_those_of_the_general_way(lines: list[bytes], hold_lines: int, batch: int) -> None:
    general, _ = run(lines, alone=False, hold_lines=hold_lines, batch=batch)
    alone, assembler = run(lines, alone=True, hold_lines=hold_lines, batch=batch)
    assert lines_of(alone) == lines_of(general)
    assert assembler.stats.events == len(alone)


def test_each_shape_goes_the_way_it_should() -> None:
    for kind, template in SECCOMPS.items():
        line = template.format(s=stamp(5), p=42).encode()
        general, _ = run([line], alone=False, hold_lines=10, batch=1)
        alone, assembler = run([line], alone=True, hold_lines=10, batch=1)
        fast = kind in ("auditd", "enriched", "node", "hex", "kmsg", "huge_pid")
        assert assembler.stats.completed_alone == (1 if fast else 0), kind
        # the whole event, details included, when it had no companions
        assert alone == general, kind


def test_the_record_alone_is_parsed_as_the_general_way_parses_it() -> None:
    line = SECCOMPS["hex"].format(s=stamp(7), p=4242).encode()
    (event,), assembler = run([line], alone=True, hold_lines=10, batch=1)
    assert assembler.stats.completed_alone == 1
    assert (event.comm, event.exe, event.pid, event.arch and event.arch.name, event.syscall,
            event.syscall_name, event.action) == (
        "my sh", "/tmp/my sh-?", 4242, "x32", 0x40000000 | 39, "x32:1073741863", "kill_thread")
    assert event.details == {"gid": "0", "ses": "1", "subj": "=unconfined (enforce)", "sig": "0",
                             "compat": "0", "ip": "0x1", "code": "0x0"}
    huge = SECCOMPS["huge_pid"].format(s=stamp(8), p=0).encode()
    (event,), _ = run([huge], alone=True, hold_lines=10, batch=1)
    assert (event.pid, event.uid, event.auid) == (None, None, None)


def test_it_waits_behind_an_event_that_waits() -> None:
    avc = AVC.format(s=stamp(1), p=1).encode()
    seccomp = SECCOMPS["auditd"].format(s=stamp(2), p=2).encode()
    assembler = EventAssembler(namer=namer, hold_lines=3, seccomp_alone=True)
    assert assembler.feed_many([avc, seccomp], 0, 0.0) == []  # behind the AVC, in the queue
    assert assembler.stats.completed_alone == 0
    released = assembler.feed_many([b"noise", b"noise", b"noise"], 2, 0.0)
    assert [[e.record_type for e in events] for _, events in released] == [["AVC"], ["SECCOMP"]]
    # With nothing ahead, out at once, each at its own line (as feed() would give them).
    released = assembler.feed_many([seccomp, b"noise", seccomp], 10, 0.0)
    assert [(at, len(events)) for at, events in released] == [(10, 1), (12, 1)]
    assert assembler.stats.completed_alone == 2 and assembler.pending_position() is None


def test_companions_after_it_are_not_joined() -> None:
    seccomp = SECCOMPS["auditd"].format(s=stamp(3), p=9).encode()
    rest = [c.format(s=stamp(3), p=9).encode() for c in COMPANIONS] + [EOE.format(s=stamp(3)).encode()]
    (alone,), assembler = run([seccomp, *rest], alone=True, hold_lines=10, batch=10)
    (general,), _ = run([seccomp, *rest], alone=False, hold_lines=10, batch=10)
    assert "ppid" not in alone.details and general.details["ppid"] == "1"
    assert assembler.stats.companions_unjoined == 3
    assert lines_of([alone]) == lines_of([general])
