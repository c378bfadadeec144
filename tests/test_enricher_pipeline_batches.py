"""The pipeline's batch path: lines fed to the assembler in slices, processes looked up as soon as their
record is parsed, the writer's whole-batch flush, and the allocator setting the loop makes."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from syscribe.enricher import allocator
from syscribe.enricher.containers import ContainerInfo, Lookup
from syscribe.enricher.events import EventAssembler
from syscribe.enricher.output import OutputWriter
from syscribe.enricher.pipeline import Pipeline, Settings
from syscribe.enricher.sources import FileSource


def seccomp(serial: int, pid: int, ts: float) -> str:
    return (
        f"type=SECCOMP msg=audit({ts:.3f}:{serial}): auid=4294967295 uid=0 gid=0 ses=4294967295 "
        f'pid={pid} comm="sh" exe="/bin/busybox" sig=0 arch=c000003e syscall=83 compat=0 ip=0x1 '
        "code=0x7ffc0000\n"
    )


class Recording:
    """A resolver that says every process is in one container and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float | None]] = []

    def lookup(self, pid: int, at: float | None = None) -> Lookup:
        self.calls.append((pid, at))
        return Lookup(ContainerInfo("c" * 64, "runc", "app", "web-0", "shop", None), True)


def run(tmp_path: Path, text: str, resolver: Recording, **settings: object) -> list[dict[str, object]]:
    log = tmp_path / "audit.log"
    log.write_text(text)
    out = tmp_path / "out.json"
    source = FileSource("auditd", log, follow=False, start="beginning", mark=None)
    pipeline = Pipeline(
        source, EventAssembler(hold_seconds=0.05, hold_lines=10), resolver, OutputWriter(out),
        Settings(node="n", **settings),  # type: ignore[arg-type]
        checkpoint_path=tmp_path / "cp.json",
    )
    pipeline.run()
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def test_recent_records_are_looked_up_once_as_soon_as_they_are_read(tmp_path: Path) -> None:
    now = time.time()
    # Three records of one process at one audit time, and one of another process.
    text = seccomp(1, 77, now) + seccomp(2, 77, now) + seccomp(3, 77, now) + seccomp(4, 78, now + 1)
    resolver = Recording()
    records = run(tmp_path, text, resolver)
    assert [r["pod"] for r in records] == ["web-0"] * 4
    # The lookup at read time stands for the one at release: one per (pid, audit time).
    assert [pid for pid, _ in resolver.calls] == [77, 78]
    assert {round(at or 0, 3) for _, at in resolver.calls} == {round(now, 3), round(now + 1, 3)}


def test_old_records_are_looked_up_when_released_only(tmp_path: Path) -> None:
    text = "".join(seccomp(i, 77, 1_700_000_000.0) for i in range(1, 4))
    resolver = Recording()
    records = run(tmp_path, text, resolver)
    assert len(records) == 3 and len(resolver.calls) == 3


def test_warm_lookups_can_be_switched_off(tmp_path: Path) -> None:
    now = time.time()
    resolver = Recording()
    records = run(tmp_path, seccomp(1, 77, now) + seccomp(2, 78, now), resolver, warm_lookups=False)
    assert len(records) == 2 and [pid for pid, _ in resolver.calls] == [77, 78]


def test_a_batch_longer_than_a_slice_keeps_order_and_positions(tmp_path: Path) -> None:
    # 12,000 lines in one read: three slices for the assembler, events released across their edges.
    lines = []
    for i in range(1, 12_001):
        lines.append(seccomp(i, 100 + i % 7, 1_700_000_000 + i / 1000) if i % 3 == 0 else "noise\n")
    text = "".join(lines)
    log = tmp_path / "audit.log"
    log.write_text(text)
    out = tmp_path / "out.json"
    pipeline = Pipeline(
        FileSource("auditd", log, follow=False, start="beginning", mark=None),
        EventAssembler(hold_seconds=1e9, hold_lines=10), Recording(), OutputWriter(out), Settings(node="n"),
        checkpoint_path=tmp_path / "cp.json",
    )
    while pipeline.stats.lines < 12_000:
        assert pipeline.step(timeout=0)
    pipeline.checkpoint_now()
    # Every event but the last four (held: fewer than hold_lines lines follow them, at lines 11,991,
    # 11,994, 11,997 and 12,000) is out, and the resume point is the start of line 11,991. The events
    # released at or after it (line L leaves at line L + 10) are listed with how far past it they left,
    # so that a restart from there does not write them again.
    cp = orjson.loads((tmp_path / "cp.json").read_bytes())
    assert pipeline.stats.written == 3_996
    assert cp["mark"]["offset"] == len("".join(lines[:11_990]))
    assert cp["written"] == [[f"|{1_700_000_000 + i / 1000:.3f}:{i}|SECCOMP", i + 10 - 11_991]
                             for i in (11_982, 11_985, 11_988)]
    assert cp["output"]["offset"] == out.stat().st_size
    pipeline.run()
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["auditID"] for r in records] == [
        f"{1_700_000_000 + i / 1000:.3f}:{i}" for i in range(3, 12_001, 3)]
    cp = orjson.loads((tmp_path / "cp.json").read_bytes())
    assert (cp["mark"]["offset"], cp["written"]) == (len(text), [])


def test_writer_flushes_a_big_batch_across_rotations(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    writer = OutputWriter(out, max_bytes=10_000, backups=1000)
    lines = [orjson.dumps({"n": i, "pad": "x" * (i % 300)}) + b"\n" for i in range(5_000)]
    for line in lines:
        writer.append(line)
    written = 0
    while writer.pending:
        written += writer.flush()
        if writer.rotate_due():
            writer.rotate()
    writer.close()
    assert written == 5_000 and writer.lines_written == 5_000
    files = [*sorted(tmp_path.glob("out.json.*"), key=lambda p: -int(p.suffix[1:])), out]
    got = b"".join(p.read_bytes() for p in files)
    assert got == b"".join(lines)
    for path in files[:-1]:
        size = path.stat().st_size
        assert 10_000 <= size < 10_000 + 400  # rotated at the first line that reached the size


class _Mallopt:
    """mallopt(3) as ctypes gives it (argtypes and restype are set on it), recording what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return 1


class _Libc:
    """Stands in for the C library, with or without mallopt."""

    def __init__(self, with_mallopt: bool = True) -> None:
        if with_mallopt:
            self.mallopt = _Mallopt()


def test_keep_freed_heap_raises_glibcs_trim_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """What keep_freed_heap asks glibc: M_TRIM_THRESHOLD (-1 in malloc.h) of 32 MiB, the same again when
    called again; nothing (and no error) from a C library without mallopt. (glibc's answer to it, the
    brk calls and page faults it saves, is measured in bench/enricher.py, not here: it depends on how
    the heap lies.)"""
    libc = _Libc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    allocator.keep_freed_heap()
    allocator.keep_freed_heap()
    assert libc.mallopt.calls == [(-1, 32 << 20)] * 2
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: _Libc(with_mallopt=False))
    allocator.keep_freed_heap()
