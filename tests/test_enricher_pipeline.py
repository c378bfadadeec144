"""The enricher's pipeline: records in, enriched lines out, in order, exactly once across restarts.

The container side runs the real ContainerResolver on a /proc tree and a runc state directory made in
a temp dir (the resolver reads them as it reads the real ones), so that pids, cgroups and bundles can
be made to appear late or never. The real ones: test_enricher_real.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from syscribe.enricher import checkpoint as cpmod
from syscribe.enricher.containers import ContainerResolver
from syscribe.enricher.enrichedline import APPARMOR_KEYS, COMMON_KEYS, SELINUX_KEYS, Filter
from syscribe.enricher.events import EventAssembler
from syscribe.enricher.metrics import Metrics
from syscribe.enricher.output import OutputWriter
from syscribe.enricher.pipeline import Pipeline, Settings, Stats, restore
from syscribe.enricher.sources import FileSource
from tests.support.prereq import require
from tests.support.tmpfs import small_tmpfs

CID = "ab" * 32
UID = "6f1f0d3c-2a7b-4c55-9a1e-1f2e3d4c5b6a"


def seccomp(serial: int, *, pid: int = 4242, syscall: int = 83, code: str = "0x7ffc0000",
            arch: str = "c000003e", ts: str = "1700000000.123") -> str:
    return (
        f"type=SECCOMP msg=audit({ts}:{serial}): auid=4294967295 uid=0 gid=0 ses=4294967295 pid={pid} "
        f'comm="mkdir" exe="/bin/busybox" sig=0 arch={arch} syscall={syscall} compat=0 ip=0x47b567 '
        f"code={code}\n"
    )


def selinux_event(serial: int, pid: int = 4242) -> list[str]:
    stamp = f"audit(1700000000.500:{serial})"
    return [
        f"type=AVC msg={stamp}: avc:  denied  {{ read }} for  pid={pid} comm=\"cat\" name=\"shadow\" "
        'dev="sda1" ino=123 scontext=system_u:system_r:container_t:s0:c1,c2 '
        "tcontext=system_u:object_r:shadow_t:s0 tclass=file permissive=0\n",
        f"type=SYSCALL msg={stamp}: arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=1 a2=0 "
        f'a3=0 items=1 ppid=1 pid={pid} auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 '
        'fsgid=0 tty=(none) ses=4294967295 comm="cat" exe="/bin/cat" subj=system_u:system_r:container_t:s0 '
        "key=(null)\n",
        f"type=PROCTITLE msg={stamp}: proctitle=636174002F6574632F736861646F77\n",
        f"type=EOE msg={stamp}: \n",
    ]


def apparmor(serial: int, pid: int = 4242) -> str:
    return (
        f'type=AVC msg=audit(1700000000.700:{serial}): apparmor="DENIED" operation="open" '
        f'profile="cri-containerd.apparmor.d" name="/etc/shadow" pid={pid} comm="cat" '
        'requested_mask="r" denied_mask="r" fsuid=0 ouid=0\n'
    )


class Reports:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, code: str, message: str) -> None:
        self.items.append((code, message))

    def codes(self) -> list[str]:
        return [c for c, _ in self.items]


def fake_proc(tmp_path: Path, pid: int = 4242, *, bundle: bool = True) -> tuple[Path, Path]:
    """A /proc with one process in a CRI-O container, and runc's state dir for it."""
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / "stat").write_bytes(b"btime 1000\n")
    (proc / str(pid) / "stat").write_bytes(f"{pid} (app) S".encode() + b" 0" * 18 + b" 5 1 1 0")
    (proc / str(pid) / "cgroup").write_bytes(f"0::/kubepods/besteffort/pod{UID}/crio-{CID}\n".encode())
    state = tmp_path / "runc"
    state.mkdir(exist_ok=True)
    if bundle:
        write_bundle_state(state)
    return proc, state


def write_bundle_state(state: Path) -> None:
    labels = [
        "io.kubernetes.pod.name=web-0", "io.kubernetes.pod.namespace=shop",
        "io.kubernetes.container.name=app", f"io.kubernetes.pod.uid={UID}",
    ]
    (state / CID).mkdir(parents=True, exist_ok=True)
    tmp = state / CID / "state.json.tmp"
    tmp.write_text(json.dumps({"config": {"labels": labels}}))
    tmp.rename(state / CID / "state.json")


class Run:
    """A pipeline over a log file, writing to out.json, with its parts at hand."""

    def __init__(self, tmp_path: Path, log: Path, *, follow: bool = False, start: str = "beginning",
                 checkpoint: Path | None = None, filter: Filter | None = None, proc: Path | None = None,
                 state: Path | None = None, backlog: float = 2.0, output: Path | None = None,
                 max_bytes: int = 0) -> None:
        self.reports = Reports()
        self.out = output or tmp_path / "out.json"
        self.stats = Stats()
        restored = restore(checkpoint, "auditd", self.reports, self.out)
        self.source = FileSource("auditd", log, follow=follow, start=start,
                                 mark=restored.mark if restored else None,  # type: ignore[arg-type]
                                 report=self.reports, rotate_grace=0.05)
        self.writer = OutputWriter(self.out, max_bytes=max_bytes, backups=100)
        self.resolver = ContainerResolver(
            proc=proc or tmp_path / "no-proc", state_dirs=[state] if state else []
        )
        self.assembler = EventAssembler(hold_seconds=0.05)
        self.metrics = Metrics()
        self.pipeline = Pipeline(
            self.source, self.assembler, self.resolver, self.writer,
            Settings(node="node-1", backlog_seconds=backlog, checkpoint_interval=0.05, tick=0.02),
            checkpoint_path=checkpoint, restored=restored, filter=filter, metrics=self.metrics,
            report=self.reports, stats=self.stats,
        )

    def run(self) -> list[dict[str, Any]]:
        self.pipeline.run()
        return lines(self.out)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_log(path: Path, *items: str | list[str]) -> Path:
    with open(path, "a") as fh:
        for item in items:
            fh.write("".join(item) if isinstance(item, list) else item)
    return path


# --- the lines ---------------------------------------------------------------------------------------------


def test_every_kind_has_its_keys_in_a_stable_order(tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "audit.log", seccomp(1), selinux_event(2), apparmor(3), seccomp(4, code="0x50001")
    )
    out = Run(tmp_path, log).run()
    assert [r["type"] for r in out] == ["seccomp", "selinux", "apparmor", "seccomp"]
    assert list(out[0]) == [*COMMON_KEYS, "labels"]
    assert list(out[1]) == [*COMMON_KEYS, *SELINUX_KEYS, "labels"]
    assert list(out[2]) == [*COMMON_KEYS, *APPARMOR_KEYS, "labels"]
    assert list(out[3]) == list(out[0])
    first = out[0]
    assert first["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert (first["syscallID"], first["syscallName"]) == (83, "mkdir")
    assert (first["arch"], first["action"]) == ("x86_64", "log")
    assert (first["node"], first["auditID"], first["recordType"]) == ("node-1", "1700000000.123:1", "SECCOMP")
    assert out[3]["action"] == "errno" and out[3]["errno"] == 1
    avc = out[1]
    assert (avc["perm"], avc["tclass"], avc["action"]) == ("read", "file", "denied")
    assert avc["executable"] == "/bin/cat" and avc["syscallName"] == "openat"
    aa = out[2]
    assert (aa["apparmor"], aa["operation"], aa["name"]) == ("DENIED", "open", "/etc/shadow")
    assert aa["extra_info"] == "requested_mask=r denied_mask=r fsuid=0 ouid=0"


def test_records_of_other_architectures_are_named_by_their_own(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", seccomp(1, arch="c00000b7", syscall=34),  # aarch64 mkdirat
                    seccomp(2, arch="40000003", syscall=39))  # i386 mkdir
    out = Run(tmp_path, log).run()
    assert [(r["arch"], r["syscallName"]) for r in out] == [("aarch64", "mkdirat"), ("i386", "mkdir")]


def test_container_and_pod_come_from_the_node(tmp_path: Path) -> None:
    proc, state = fake_proc(tmp_path)
    log = write_log(tmp_path / "audit.log", seccomp(1), seccomp(2, pid=999))
    out = Run(tmp_path, log, proc=proc, state=state).run()
    assert (out[0]["namespace"], out[0]["pod"], out[0]["container"]) == ("shop", "web-0", "app")
    assert (out[0]["containerID"], out[0]["podUID"], out[0]["runtime"]) == (CID, UID, "cri-o")
    # pid 999 is not there: written with what is known, not dropped
    assert out[1]["pid"] == 999 and out[1]["pod"] is None


def test_filters(tmp_path: Path) -> None:
    proc, state = fake_proc(tmp_path)
    log = write_log(tmp_path / "audit.log", seccomp(1), seccomp(2, pid=999), apparmor(3),
                    seccomp(4, code="0x80000000"))
    run = Run(tmp_path, log, proc=proc, state=state, filter=Filter.of(namespaces=["shop"], types=["seccomp"]))
    assert [r["auditID"].split(":")[1] for r in run.run()] == ["1", "4"]
    assert run.stats.filtered == 2
    (tmp_path / "out.json").unlink()
    run = Run(tmp_path, log, filter=Filter.of(actions=["KILL_PROCESS"]))
    assert [r["action"] for r in run.run()] == ["kill_process"]
    with pytest.raises(ValueError, match="unknown event type"):
        Filter.of(types=["smtp"])


def test_bad_input_is_counted_and_the_rest_goes_through(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with open(log, "wb") as fh:
        fh.write(seccomp(1).encode())
        fh.write(os.urandom(5000).replace(b"\n", b"") + b"\n")
        fh.write(b"x" * (10 * 1024 * 1024) + b"\n")
        fh.write(seccomp(2).encode()[:70] + b"\n")  # cut mid-record
        fh.write(b'type=SECCOMP msg=audit(1700000000.1:3): pid=4242 comm="\xff\xfe" exe="\xc3(" '
                 b"arch=c000003e syscall=83 code=0x7ffc0000\n")  # invalid UTF-8
        fh.write(b"\x00" * 100 + b"\n")
        fh.write(seccomp(4).encode())
    run = Run(tmp_path, log)
    out = run.run()
    assert out[0]["auditID"] == "1700000000.123:1"
    assert "1700000000.123:4" in [r["auditID"] for r in out]
    assert "oversized_line" in run.reports.codes()
    assert run.stats.lines == 6  # the 10 MB line is skipped by the follower, the rest are fed
    for record in out:
        orjson.dumps(record)  # every line written is valid JSON


# --- the backlog: containers still being set up -----------------------------------------------------------


def _follow_in_thread(run: Run) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=run.pipeline.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def _wait_lines(path: Path, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = lines(path)
        if len(got) >= count:
            return got
        time.sleep(0.02)
    return lines(path)


def test_unsettled_event_waits_for_its_bundle_and_keeps_order(tmp_path: Path) -> None:
    proc, state = fake_proc(tmp_path, bundle=False)
    log = write_log(tmp_path / "audit.log")
    run = Run(tmp_path, log, follow=True, proc=proc, state=state, backlog=60.0)
    stop, thread = _follow_in_thread(run)
    try:
        write_log(log, seccomp(1), seccomp(2, pid=999))
        time.sleep(0.3)
        assert lines(run.out) == []  # the first waits for its bundle, the second waits behind it
        write_bundle_state(state)
        out = _wait_lines(run.out, 2)
        assert [(r["auditID"][-1], r["pod"]) for r in out] == [("1", "web-0"), ("2", None)]
    finally:
        stop.set()
        thread.join(30)


def test_unsettled_event_is_written_with_what_is_known_after_the_window(tmp_path: Path) -> None:
    proc, state = fake_proc(tmp_path, bundle=False)
    log = write_log(tmp_path / "audit.log", seccomp(1))
    run = Run(tmp_path, log, proc=proc, state=state, backlog=0.2)
    out = run.run()
    assert len(out) == 1
    assert out[0]["containerID"] == CID and out[0]["pod"] is None
    assert run.stats.unsettled_timeouts == 1


# --- checkpoints and restarts -----------------------------------------------------------------------------


def test_restart_from_checkpoint_reads_only_what_is_new(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", *[seccomp(i) for i in range(1, 51)])
    cp = tmp_path / "cp.json"
    assert len(Run(tmp_path, log, checkpoint=cp).run()) == 50
    write_log(log, *[seccomp(i) for i in range(51, 61)])
    out = Run(tmp_path, log, checkpoint=cp, start="checkpoint").run()
    assert [int(r["auditID"].split(":")[1]) for r in out] == list(range(1, 61))


def test_crash_with_an_event_written_ahead_of_an_unsettled_one(tmp_path: Path) -> None:
    """Event 1 is written, event 2 (same batch) waits for its bundle; the run dies. The checkpoint
    must resume before 2, so 1 is read again: it must not be written twice."""
    proc, state = fake_proc(tmp_path, pid=4242, bundle=False)
    log = write_log(tmp_path / "audit.log", seccomp(1, pid=999), seccomp(2, pid=4242), seccomp(3, pid=999))
    cp = tmp_path / "cp.json"
    run = Run(tmp_path, log, follow=True, checkpoint=cp, proc=proc, state=state, backlog=60.0)
    deadline = time.monotonic() + 10
    while not lines(run.out) and time.monotonic() < deadline:
        run.pipeline.step(0.05)
    run.pipeline.checkpoint_now()
    assert [r["auditID"] for r in lines(run.out)] == ["1700000000.123:1"]
    saved = cpmod.load(cp)
    assert saved is not None and saved.written  # event 1 is remembered as written
    run.pipeline.close()  # dies here: no finish()
    write_bundle_state(state)
    again = Run(tmp_path, log, checkpoint=cp, start="checkpoint", proc=proc, state=state)
    out = again.run()
    assert [r["auditID"].split(":")[1] for r in out] == ["1", "2", "3"]
    assert out[1]["pod"] == "web-0"
    assert again.stats.duplicates == 1


def test_lines_written_after_the_last_checkpoint_are_rolled_back_and_written_once(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", *[seccomp(i) for i in range(1, 11)])
    cp = tmp_path / "cp.json"
    run = Run(tmp_path, log, follow=True, checkpoint=cp)
    run.pipeline.step(0.05)
    run.pipeline.checkpoint_now()
    write_log(log, *[seccomp(i) for i in range(11, 21)])
    for _ in range(5):
        run.pipeline.step(0.1)
    assert len(lines(run.out)) == 20  # written, but the checkpoint still says 10
    with open(run.out, "ab") as fh:
        fh.write(b'{"torn": ')  # and the run died in the middle of a line
    run.pipeline.close()
    again = Run(tmp_path, log, checkpoint=cp, start="checkpoint")
    out = again.run()
    assert [int(r["auditID"].split(":")[1]) for r in out] == list(range(1, 21))
    assert "output_rolled_back" in again.reports.codes()


def test_held_events_are_left_for_the_next_run_on_stop(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", *selinux_event(1)[:2])  # AVC + SYSCALL, no EOE yet
    cp = tmp_path / "cp.json"
    run = Run(tmp_path, log, follow=True, checkpoint=cp)
    run.assembler = EventAssembler(hold_seconds=3600)
    run.pipeline.assembler = run.assembler
    run.pipeline.step(0.05)
    run.pipeline.finish(stopped=True)
    run.pipeline.close()
    assert lines(run.out) == []
    write_log(log, *selinux_event(1)[2:])
    out = Run(tmp_path, log, checkpoint=cp, start="checkpoint").run()
    assert len(out) == 1 and out[0]["executable"] == "/bin/cat"


def test_own_output_rotation(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", *[seccomp(i) for i in range(1, 201)])
    cp = tmp_path / "cp.json"
    run = Run(tmp_path, log, checkpoint=cp, max_bytes=10_000)
    run.run()
    files = sorted(tmp_path.glob("out.json*"))
    assert len(files) > 2
    got = [r["auditID"] for f in files for r in lines(f)]
    assert sorted(got, key=lambda a: int(a.split(":")[1])) == [f"1700000000.123:{i}" for i in range(1, 201)]
    assert run.writer.rotations >= 2
    saved = cpmod.load(cp)
    assert saved is not None and saved.output is not None
    assert saved.output.offset == (tmp_path / "out.json").stat().st_size


# --- a full output disk -----------------------------------------------------------------------------------


@pytest.mark.real
def test_full_output_disk_holds_lines_and_writes_them_when_space_returns(tmp_path: Path) -> None:
    require("root")
    log = write_log(tmp_path / "audit.log")
    with small_tmpfs(tmp_path / "small", "256k") as disk:
        filler = disk / "filler"
        with open(filler, "wb") as fh, contextlib.suppress(OSError):
            fh.write(b"\0" * (256 * 1024))
        run = Run(tmp_path, log, follow=True, output=disk / "out.json", checkpoint=tmp_path / "cp.json")
        stop, thread = _follow_in_thread(run)
        try:
            write_log(log, *[seccomp(i) for i in range(1, 301)])
            deadline = time.monotonic() + 30
            while "output_full" not in run.reports.codes() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "output_full" in run.reports.codes()
            assert thread.is_alive()
            message = next(m for c, m in run.reports.items if c == "output_full")
            assert "No space left on device" in message and "retrying" in message
            filler.unlink()
            out = _wait_lines(run.out, 300)
            assert [int(r["auditID"].split(":")[1]) for r in out] == list(range(1, 301))
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        assert [int(r["auditID"].split(":")[1]) for r in lines(run.out)] == list(range(1, 301))
