"""The resolver's negative cache: a pid seen without a process answers, without /proc, only for records
old enough that whoever holds the pid now started after them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from syscribe.enricher import containers
from syscribe.enricher.containers import PID_MAX, ContainerResolver, Lookup
from syscribe.enricher.gonepids import GonePids

CID = "a" * 64


def test_a_miss_answers_only_for_records_older_than_its_generation() -> None:
    pids = GonePids(1000, now=100.0, margin=4.0, period=60.0)
    pids.add(7, 110.0)
    assert pids.gone(7, 96.0)  # 96 + 4 <= 100, the epoch the mark was made in (or after)
    assert not pids.gone(7, 96.5)  # the mark may be from 100: a record of 96.5 may be its process's
    assert not pids.gone(8, 10.0)  # never missed
    # the next generation: the old marks answer for what is older than their epoch
    pids.add(9, 161.0)
    assert pids.gone(7, 96.0) and pids.gone(9, 150.0) and not pids.gone(9, 158.0)
    # two generations later the first is forgotten
    pids.add(10, 230.0)
    assert not pids.gone(7, 96.0) and pids.gone(9, 150.0)


def test_a_clock_set_back_forgets_everything() -> None:
    pids = GonePids(1000, now=100.0, margin=4.0)
    pids.add(7, 150.0)
    pids.add(8, 50.0)  # the clock went back 100 s
    assert not pids.gone(7, 0.0)
    assert pids.gone(8, 45.0) and not pids.gone(8, 47.0)


@pytest.mark.parametrize("pid", [0, -1, 1001, 1 << 40])
def test_pids_out_of_range_are_never_marked(pid: int) -> None:
    pids = GonePids(1000, now=100.0, margin=4.0)
    pids.add(pid, 200.0)
    assert not pids.gone(pid, 0.0)
    assert GonePids(PID_MAX, now=0.0, margin=1.0).pid_max == PID_MAX


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="pid_max"):
        GonePids(0, now=0.0, margin=1.0)


def test_the_resolver_does_not_ask_proc_again_for_an_old_record(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_bytes(b"btime 1000\n")
    state = tmp_path / "runc"
    (state / CID).mkdir(parents=True)
    (state / CID / "state.json").write_text('{"config": {"labels": ["io.kubernetes.pod.name=p"]}}')
    resolver = ContainerResolver(proc=proc, state_dirs=[state])
    old = time.time() - 3600
    assert resolver.lookup(4242, at=old) == Lookup(None, True)  # gone: marked
    # A process that (by its start time) could have written the old record shows up at that pid: only a
    # cache can keep the resolver from taking it, and only because the pid was seen empty after the record.
    (proc / "4242").mkdir()
    (proc / "4242" / "stat").write_bytes(b"4242 (app) S" + b" 0" * 18 + b" 500 1 1 0")
    (proc / "4242" / "cgroup").write_bytes(f"0::/kubepods/besteffort/podx/crio-{CID}\n".encode())
    assert resolver.lookup(4242, at=old) == Lookup(None, True)
    # A record written after the miss is looked up in /proc, and so is a lookup without a time.
    recent = resolver.lookup(4242, at=time.time() + 60)
    assert recent.info is not None and recent.info.pod == "p"
    assert resolver.lookup(4242).info == recent.info


def test_without_a_boot_time_there_is_no_cache(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    resolver = ContainerResolver(proc=proc, state_dirs=[])
    old = time.time() - 3600
    assert resolver.lookup(4242, at=old) == Lookup(None, True)
    (proc / "4242").mkdir()
    (proc / "4242" / "stat").write_bytes(b"4242 (app) S" + b" 0" * 18 + b" 500 1 1 0")
    (proc / "4242" / "cgroup").write_bytes(b"0::/system.slice/cron.service\n")
    assert resolver.lookup(4242, at=old) == Lookup(None, True)
    assert resolver.stats.gone == 1  # the second was found (a host process), not taken for gone


def test_a_pid_without_a_process_is_told_by_signal_0_on_our_own_proc(tmp_path: Path) -> None:
    """On this pid namespace's /proc, kill(pid, 0) says a pid is free before any open; elsewhere (a
    fake or another namespace's /proc) it could answer for the wrong namespace, so it is not used."""
    own = ContainerResolver(state_dirs=[])
    assert own._probe_by_signal
    assert not ContainerResolver(proc=tmp_path, state_dirs=[])._probe_by_signal
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert containers._exists(child.pid) and containers._exists(1)
        assert own.lookup(child.pid) == Lookup(None, True)  # a host process, found
        assert own.stats.gone == 0
    finally:
        child.kill()
        child.wait()
    assert not containers._exists(child.pid)
    assert own.lookup(child.pid, at=time.time() - 600) == Lookup(None, True)
    assert own.stats.gone == 1


def test_a_proc_that_is_not_there_is_looked_for_again_only_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = tmp_path / "proc"
    resolver = ContainerResolver(proc=proc, state_dirs=[])
    assert resolver.lookup(4242) == Lookup(None, True)  # no /proc: gone, and /proc is taken as missing
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "stat").write_bytes(b"4242 (app) S" + b" 0" * 18 + b" 500 1 1 0")
    (proc / "4242" / "cgroup").write_bytes(f"0::/kubepods/besteffort/podx/crio-{CID}\n".encode())
    assert resolver.lookup(4242) == Lookup(None, True)  # not looked for again yet
    assert resolver.stats.gone == 2
    monkeypatch.setattr(containers, "PROC_RECHECK", 0.0)
    resolver = ContainerResolver(proc=tmp_path / "elsewhere", state_dirs=[])
    resolver.lookup(4242)
    resolver.proc = proc  # as if it were mounted now
    assert resolver.lookup(4242).info is not None  # found once the recheck is due
