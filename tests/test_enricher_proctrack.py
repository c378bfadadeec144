"""The process tracker's pure parts: the connector's messages (well formed, broken, hostile, huge), and
what the resolver does with what it is told (a fake /proc tree). The real connector, real containers:
test_enricher_proctrack_real.py."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syscribe.enricher.cgroup import may_name_container, parse_proc_cgroup
from syscribe.enricher.containers import MAX_AGE, START_SLACK, ContainerInfo, ContainerResolver, Lookup
from syscribe.enricher.proctrack import (
    CN_IDX_PROC,
    CN_VAL_PROC,
    NLMSG_DONE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_NONE,
    WANTED_EVENTS,
    ProcEvent,
    parse,
    subscription,
)

CID = "5d8a4b9c1e0f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3"
UID = "aaaa2b4a-f398-41c0-928b-049e1cc4ec40"
TCK = os.sysconf("SC_CLK_TCK")
PROC_EVENT_UID = 0x4


# --- messages as the kernel writes them (linux/cn_proc.h, written out independently of the module) -------


def message(what: int, data: bytes, *, ack: int = 0, stamp: int = 123, idx: int = CN_IDX_PROC,
            val: int = CN_VAL_PROC, cn_len: int | None = None, nl_len: int | None = None,
            mtype: int = NLMSG_DONE) -> bytes:
    event = struct.pack("=IIQ", what, 0, stamp) + data
    cn = struct.pack("=IIIIHH", idx, val, 0, ack, len(event) if cn_len is None else cn_len, 0) + event
    length = 16 + len(cn) if nl_len is None else nl_len
    body = struct.pack("=IHHII", length, mtype, 0, 0, 0) + cn
    return body + b"\0" * (-len(body) % 4)


def fork(parent: int, child: int, child_thread: int | None = None, stamp: int = 1) -> bytes:
    return message(PROC_EVENT_FORK, struct.pack("=iiii", parent, parent, child_thread or child, child),
                   stamp=stamp)


def exec_(pid: int) -> bytes:
    return message(PROC_EVENT_EXEC, struct.pack("=ii", pid, pid))


def exit_(pid: int, tgid: int | None = None) -> bytes:
    return message(PROC_EVENT_EXIT, struct.pack("=iiIIii", pid, tgid or pid, 0, 9, 1, 1))


def ack(number: int, err: int = 0) -> bytes:
    return message(PROC_EVENT_NONE, struct.pack("=I", err), ack=number)


def test_subscription_layout() -> None:
    plain = subscription(PROC_CN_MCAST_LISTEN, port=77, seq=5, ack=9)
    length, mtype, _flags, seq, port = struct.unpack_from("=IHHII", plain)
    assert (length, mtype, seq, port) == (len(plain), NLMSG_DONE, 5, 77) and length == 16 + 20 + 4
    idx, val, _cseq, cack, cn_len, _f = struct.unpack_from("=IIIIHH", plain, 16)
    assert (idx, val, cack, cn_len) == (CN_IDX_PROC, CN_VAL_PROC, 9, 4)
    assert struct.unpack_from("=I", plain, 36) == (PROC_CN_MCAST_LISTEN,)
    filtered = subscription(PROC_CN_MCAST_LISTEN, port=77, seq=5, ack=9, events=WANTED_EVENTS)
    assert len(filtered) == 16 + 20 + 8 and struct.unpack_from("=H", filtered, 32)[0] == 8
    assert struct.unpack_from("=II", filtered, 36) == (PROC_CN_MCAST_LISTEN, WANTED_EVENTS)


def test_parse_each_event() -> None:
    events, bad = parse(fork(10, 11, stamp=99) + exec_(11) + exit_(11) + ack(41, 0) + ack(7, 1))
    assert bad == 0
    assert events == [
        ProcEvent(PROC_EVENT_FORK, 11, 10, 99),
        ProcEvent(PROC_EVENT_EXEC, 11, None, 123),
        ProcEvent(PROC_EVENT_EXIT, 11, None, 123),
        ProcEvent(PROC_EVENT_NONE, 0, None, 123, ack=41, error=0),
        ProcEvent(PROC_EVENT_NONE, 0, None, 123, ack=7, error=1),
    ]


def test_threads_are_marked() -> None:
    events, _bad = parse(fork(10, 10, child_thread=12) + exit_(12, tgid=10))
    assert [(e.what, e.pid, e.thread) for e in events] == [
        (PROC_EVENT_FORK, 10, True),
        (PROC_EVENT_EXIT, 10, True),
    ]


def test_events_not_used_are_skipped_not_malformed() -> None:
    events, bad = parse(message(PROC_EVENT_UID, struct.pack("=iiII", 5, 5, 0, 0)) + exec_(5))
    assert (len(events), bad) == (1, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0" * 15,  # shorter than a header
        struct.pack("=IHHII", 0, NLMSG_DONE, 0, 0, 0),  # length 0: would never advance
        struct.pack("=IHHII", 15, NLMSG_DONE, 0, 0, 0),  # shorter than its own header
        fork(1, 2)[:30],  # cut inside the cn_msg
        message(PROC_EVENT_FORK, struct.pack("=iiii", 1, 1, 2, 2), nl_len=4096),  # claims more than there
        message(PROC_EVENT_FORK, struct.pack("=iiii", 1, 1, 2, 2), cn_len=60000),
        message(PROC_EVENT_FORK, struct.pack("=iiii", 1, 1, 2, 2), idx=4),  # another connector
        message(PROC_EVENT_FORK, struct.pack("=ii", 1, 1)),  # body too short for a fork
        message(PROC_EVENT_FORK, b"", cn_len=8),  # event shorter than its header
        message(PROC_EVENT_FORK, struct.pack("=iiii", 1, 1, 2, 2), mtype=77),
        b"\xff" * 64,
    ],
)
def test_broken_datagrams_yield_no_events_and_never_raise(data: bytes) -> None:
    events, _bad = parse(data)
    assert events == []


def test_a_good_message_before_a_broken_one_is_kept() -> None:
    events, bad = parse(exec_(5) + struct.pack("=IHHII", 9999, NLMSG_DONE, 0, 0, 0))
    assert [e.pid for e in events] == [5] and bad == 1


def test_huge_datagram() -> None:
    data = b"".join(exec_(pid) for pid in range(1, 2001))
    events, bad = parse(memoryview(data))
    assert len(events) == 2000 and bad == 0 and events[-1].pid == 2000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_parse_without_raising(data: bytes) -> None:
    events, bad = parse(data)
    assert bad >= 0 and all(isinstance(e, ProcEvent) for e in events)


# --- the cgroup pre-check ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b"0::/\n",
        b"12:memory:/user.slice\n0::/user.slice/user-0.slice/session-1.scope\n",
        b"4:memory:/process_api/454e1c5bd7242dd606c2727e4df9382f\n",
        b"\xff\xfe" * 1000,
        b"0::/" + b"a" * 63 + b"\n",  # 63 hex: not an id
    ],
)
def test_host_cgroups_are_told_without_parsing(text: bytes) -> None:
    assert not may_name_container(text)
    assert parse_proc_cgroup(text) is None


@pytest.mark.parametrize(
    "text",
    [
        f"0::/kubepods/besteffort/pod{UID}/crio-{CID}\n".encode(),
        f"4:memory:/docker/{CID}\n".encode(),
        f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice\n".encode(),
    ],
)
def test_container_cgroups_pass_the_pre_check(text: bytes) -> None:
    assert may_name_container(text) and parse_proc_cgroup(text) is not None


def test_pre_check_reads_no_further_than_the_parser() -> None:
    hidden = b"0::/" + b"x" * (64 * 1024) + f"\n0::/crio-{CID}\n".encode()
    assert not may_name_container(hidden) and parse_proc_cgroup(hidden) is None


# --- the resolver told of processes as they start (a fake /proc) ----------------------------------------


def _ns_at_ticks(ticks: int) -> int:
    """The CLOCK_MONOTONIC time at which a process started `ticks` after boot would be reported."""
    suspended = time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
    return int((ticks / TCK - suspended) * 1e9)


class Node:
    """A fake /proc and a runc state dir with one container of pod default/segfaulter."""

    def __init__(self, root: Path) -> None:
        self.proc = root / "proc"
        self.proc.mkdir()
        (self.proc / "stat").write_bytes(b"btime 1000\n")
        self.state = root / "runc"
        (self.state / CID).mkdir(parents=True)
        self.write_state()

    def write_state(self) -> None:
        labels = ["io.kubernetes.pod.name=segfaulter", "io.kubernetes.pod.namespace=default",
                  f"io.kubernetes.pod.uid={UID}", "io.kubernetes.container.name=app"]
        (self.state / CID / "state.json").write_text(json.dumps({"config": {"labels": labels}}))

    def process(self, pid: int, start: int, *, container: bool = True, comm: str = "app") -> None:
        folder = self.proc / str(pid)
        folder.mkdir(exist_ok=True)
        (folder / "stat").write_bytes(f"{pid} ({comm}) S".encode() + b" 0" * 18 + f" {start} 1 1 0".encode())
        cgroup = f"0::/kubepods/besteffort/pod{UID}/crio-{CID}\n" if container else "0::/system.slice/x\n"
        (folder / "cgroup").write_text(cgroup)

    def end(self, pid: int) -> None:
        for name in ("stat", "cgroup"):
            (self.proc / str(pid) / name).unlink(missing_ok=True)

    def epoch(self, ticks: int) -> float:
        return 1000 + ticks / TCK

    def resolver(self, **kwargs: object) -> ContainerResolver:
        return ContainerResolver(proc=self.proc, state_dirs=[self.state], **kwargs)  # type: ignore[arg-type]


APP = ContainerInfo(CID, "cri-o", "app", "segfaulter", "default", UID, {})


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_tracked_process_is_known_after_it_is_gone(node: Node) -> None:
    node.process(4242, 500)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500))
    node.end(4242)
    assert resolver.lookup(4242, at=node.epoch(500) + 0.1) == Lookup(APP, True)
    assert resolver.stats.tracked == 1 and resolver.stats.gone == 1
    # The control: without the tracker nothing read it while it lived.
    assert node.resolver().lookup(4242, at=node.epoch(500) + 0.1) == Lookup(None, True)


def test_a_tracked_live_process_is_a_cache_hit(node: Node) -> None:
    node.process(4242, 500)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500))
    assert resolver.lookup(4242) == Lookup(APP, True)
    assert resolver.stats.cache_hits == 1 and resolver.stats.bundles_read == 1


def test_host_processes_are_not_remembered(node: Node) -> None:
    node.process(10, 500, container=False)
    resolver = node.resolver()
    assert not resolver.track(10, at_ns=_ns_at_ticks(500))
    assert resolver.stats.tracked == 0 and resolver.stats.bundles_read == 0


def test_runtime_init_in_the_host_cgroup_is_not_remembered(node: Node) -> None:
    node.process(10, 500, container=False, comm="runc:[2:INIT]")
    assert not node.resolver().track(10, at_ns=_ns_at_ticks(500))


def test_a_later_owner_of_the_pid_is_not_taken_for_the_one_reported(node: Node) -> None:
    node.process(4242, 900)  # started 4 s after the event: the reported process is gone, pid reused
    resolver = node.resolver()
    assert not resolver.track(4242, at_ns=_ns_at_ticks(500))
    assert resolver.stats.tracked == 0


def test_a_child_gone_before_it_was_read_gets_its_parents_container(node: Node) -> None:
    node.process(100, 400)
    resolver = node.resolver()
    assert resolver.track(100, at_ns=_ns_at_ticks(400))
    # The fork of 101 was reported, but it is gone before the tracker reads it.
    assert resolver.track(101, parent=100, at_ns=_ns_at_ticks(500))
    assert resolver.stats.inherited == 1
    assert resolver.lookup(101, at=node.epoch(500)) == Lookup(APP, True)


def test_no_inheritance_from_unknown_ended_or_younger_parents(node: Node) -> None:
    resolver = node.resolver()
    assert not resolver.track(101, parent=100, at_ns=_ns_at_ticks(500))  # parent never seen
    node.process(100, 400)
    assert resolver.track(100, at_ns=_ns_at_ticks(400))
    assert not resolver.track(101, parent=100, at_ns=_ns_at_ticks(300))  # parent's pid had another owner
    assert not resolver.track(101, parent=101, at_ns=_ns_at_ticks(500))
    assert not resolver.track(101, parent=None, at_ns=_ns_at_ticks(500))
    resolver.exited(100, node.epoch(450))
    assert not resolver.track(101, parent=100, at_ns=_ns_at_ticks(500))  # parent had ended


def test_a_record_written_after_the_process_ended_is_not_its(node: Node) -> None:
    node.process(4242, 500)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500))
    ended = node.epoch(600)
    resolver.exited(4242, ended)
    node.end(4242)
    assert resolver.stats.exits == 1
    assert resolver.lookup(4242, at=ended - 0.5) == Lookup(APP, True)
    # Within the clocks' slack still its; well after, a process nobody remembered (the pid's next) wrote it.
    assert resolver.lookup(4242, at=ended + START_SLACK / 2) == Lookup(APP, True)
    assert resolver.lookup(4242, at=ended + START_SLACK + 5) == Lookup(None, True)


def test_a_leader_that_ends_before_its_threads_is_not_marked(node: Node) -> None:
    node.process(4242, 500)
    for tid in ("4242", "4243"):
        (node.proc / "4242" / "task" / tid).mkdir(parents=True)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500))
    resolver.exited(4242, node.epoch(600))
    assert resolver.stats.exits == 0


def test_exits_of_unknown_and_host_processes_change_nothing(node: Node) -> None:
    node.process(10, 500, container=False)
    resolver = node.resolver()
    assert resolver.lookup(10) == Lookup(None, True)  # remembered by the lookup, as a host process
    resolver.exited(10, node.epoch(600))
    resolver.exited(999_999, None)
    resolver.exited(-1)
    assert resolver.stats.exits == 0


def test_expire_forgets_what_ended_long_ago(node: Node) -> None:
    node.process(4242, 500)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500))
    resolver.exited(4242, 5000.0)
    node.end(4242)
    assert resolver.expire(now=5000.0 + MAX_AGE - 1) == 0
    assert resolver.lookup(4242, at=4999.0) == Lookup(APP, True)
    assert resolver.expire(now=5000.0 + MAX_AGE + 1) == 1
    assert resolver.lookup(4242, at=4999.0) == Lookup(None, True)
    assert resolver.stats.expired == 1


def test_expire_notes_the_end_of_processes_whose_exit_went_unseen(node: Node) -> None:
    node.process(4242, 500)
    node.process(4243, 500)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500)) and resolver.track(4243, at_ns=_ns_at_ticks(500))
    node.end(4242)
    now = time.time()
    assert resolver.expire(now=now) == 0
    assert resolver.lookup(4242, at=now - 1) == Lookup(APP, True)
    assert resolver.lookup(4242, at=now + START_SLACK + 5) == Lookup(None, True)
    assert resolver.lookup(4243) == Lookup(APP, True)  # still there: still its own


def test_the_cache_is_bounded(node: Node) -> None:
    resolver = node.resolver(cache_size=3)
    for pid in range(200, 205):
        node.process(pid, 500)
        assert resolver.track(pid, at_ns=_ns_at_ticks(500))
        node.end(pid)
    known = [pid for pid in range(200, 205) if resolver.lookup(pid, at=node.epoch(500)).info is not None]
    assert known == [202, 203, 204]


def test_a_container_whose_state_came_later_is_named_once_its_process_is_gone(node: Node) -> None:
    (node.state / CID / "state.json").unlink()
    node.process(4242, 500)
    resolver = node.resolver()
    assert resolver.track(4242, at_ns=_ns_at_ticks(500))  # known by its cgroup, not yet by its state
    node.write_state()
    node.end(4242)
    assert resolver.lookup(4242, at=node.epoch(500)) == Lookup(APP, True)


@pytest.mark.parametrize("pid", [0, -1, 2**22 + 1, 2**63, True])
def test_impossible_pids_are_not_tracked(node: Node, pid: int) -> None:
    assert not node.resolver().track(pid, parent=1, at_ns=1)


def test_hostile_proc_files_are_not_remembered(node: Node) -> None:
    node.process(50, 500)
    (node.proc / "50" / "stat").write_bytes(b"50 (x" + b")" * 10_000)  # no fields after comm
    assert not node.resolver().track(50, at_ns=_ns_at_ticks(500))
    node.process(51, 500)
    (node.proc / "51" / "cgroup").write_bytes(b"0::/crio-" + b"f" * 64 + b"\n" + b"x" * (1 << 20))
    assert not node.resolver().track(51, at_ns=_ns_at_ticks(500))  # over the read cap: not read at all
    os.mkfifo(node.proc / "52")
    assert not node.resolver().track(52, at_ns=_ns_at_ticks(500))


def test_the_option_is_in_the_help() -> None:
    import subprocess
    import sys

    syscribe = str(Path(sys.executable).parent / "syscribe")
    done = subprocess.run(
        [syscribe, "enrich", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "--track-processes / --no-track-processes" in done.stdout
