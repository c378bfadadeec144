"""The resident program (bpf/resident.bpf.c through syscribe.recorder.resident): one program, a slot
per recording, namespaces kept apart, a full table refused, pins that outlive the process.

The workloads are `unshare -m` shells that wait on stdin before doing their part, so that a slot is
in place before the calls it must count (no sleeps)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syscribe import arch as archmod
from syscribe.recorder.base import RecorderError
from syscribe.recorder.resident import (
    COUNTS_SIZE,
    EXTRA_KEY,
    INFO,
    NR_KINDS,
    NR_NUMBERS,
    ResidentProgram,
    SlotsFullError,
    decode_slot,
    filter_bytes,
    info_bytes,
)
from syscribe.syscalls import name_of, number_of
from tests.support.prereq import require

KINDS = (archmod.X86_64, archmod.I386, archmod.X32)


# -- pure -------------------------------------------------------------------------------------------
def counters(**at: int) -> bytes:
    words = [0] * (COUNTS_SIZE // 8)
    for where, n in at.items():
        phase, kind, nr = (int(x) for x in where[1:].split("_"))
        words[(phase * NR_KINDS + kind) * NR_NUMBERS + nr] = n
    import struct

    return struct.pack(f"={len(words)}Q", *words)


def test_decode_slot_splits_phases_and_kinds() -> None:
    raw = counters(p0_0_0=3, p0_1_20=1, p1_0_165=2, p0_2_511=7)
    extras = [(EXTRA_KEY.pack(5000, 4, 0, 0), 9), (EXTRA_KEY.pack((1 << 64) - 1, 4, 0, 1), 1)]
    reading = decode_slot(raw, INFO.pack(1, 157, 1, 0, 2), extras, KINDS)
    assert reading.counted == {(archmod.X86_64, 0): 3, (archmod.I386, 20): 1, (archmod.X32, 511): 7,
                               (archmod.X86_64, 5000): 9}
    assert reading.before == {(archmod.X86_64, 165): 2, (archmod.X86_64, -1): 1}
    assert reading.anchored and reading.lost == 2
    counted, _before = reading.recordings()
    assert counted.warnings and "2 syscalls could not be counted" in counted.warnings[0]


def test_filter_bits_are_the_inode_low_bits() -> None:
    bits = filter_bytes([4026531841, 4026531841 + 65536, 7])
    words = memoryview(bits).cast("Q")
    set_bits = [w * 64 + b for w in range(len(words)) for b in range(64) if words[w] >> b & 1]
    assert set_bits == sorted({4026531841 % 65536, 7})
    assert filter_bytes([]) == bytes(len(bits))


def test_decode_slot_refuses_a_short_block_and_skips_bogus_extras() -> None:
    with pytest.raises(RecorderError, match="expected"):
        decode_slot(b"\0" * 8, INFO.pack(0, 0, 0, 0, 0), [], KINDS)
    bogus = [(EXTRA_KEY.pack(1, 0, 7, 0), 1), (EXTRA_KEY.pack(1, 0, 0, 9), 1)]
    assert decode_slot(counters(), INFO.pack(0, 0, 0, 0, 0), bogus, KINDS).counted == {}


@pytest.mark.parametrize("bad", [-1, NR_NUMBERS, 1 << 40, True])
def test_anchor_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(RecorderError, match="out of range"):
        info_bytes(bad)


@pytest.mark.parametrize("slots", [0, -5, 1 << 20, True])
def test_slot_count_out_of_range_is_refused(slots: int) -> None:
    with pytest.raises(RecorderError, match="slots must be"):
        ResidentProgram("/sys/fs/bpf/x", slots=slots)


def test_pin_dir_outside_bpffs_is_refused() -> None:
    require("root", "ebpf")
    with pytest.raises(RecorderError, match="not below /sys/fs/bpf"):
        ResidentProgram("/tmp/pins").open()


# -- real -------------------------------------------------------------------------------------------
@pytest.fixture
def pin_dir() -> Iterator[str]:
    path = f"/sys/fs/bpf/syscribe-test-{uuid.uuid4().hex[:10]}"
    try:
        yield path
    finally:
        ResidentProgram(path).unload()
        assert not os.path.exists(path)


class Shell:
    """A shell in a mount namespace of its own that runs `script` once told to (a line on stdin)."""

    def __init__(self, script: str) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", f"echo ready; read go; {script}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"ready\n"  # the shell is in its namespace
        self.mnt_ns = os.stat(f"/proc/{self.proc.pid}/ns/mnt").st_ino
        assert self.mnt_ns != os.stat("/proc/self/ns/mnt").st_ino

    def go(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


def names(counts: dict[tuple[archmod.Arch, int], int]) -> set[str]:
    return {n for (a, nr) in counts if (n := name_of(a, nr)) is not None}


def test_two_namespaces_two_slots_stay_apart(pin_dir: str, tmp_path: Path) -> None:
    require("root", "ebpf", "libseccomp")
    program = ResidentProgram(pin_dir, slots=4)
    program.open()
    try:
        assert not program.picked_up and program.program == "resident_count"
        a = Shell(f"mkdir {tmp_path}/a")
        b = Shell(f"ln -s /x {tmp_path}/b")
        program.start(0, a.mnt_ns, None)
        program.start(1, b.mnt_ns, None)
        assert program.entries() == {a.mnt_ns: 0, b.mnt_ns: 1}
        a.go()
        b.go()
        seen_a, seen_b = names(program.end(0, a.mnt_ns).counted), names(program.end(1, b.mnt_ns).counted)
        assert {"mkdir", "mkdirat"} & seen_a and not {"symlink", "symlinkat"} & seen_a
        assert {"symlink", "symlinkat"} & seen_b and not {"mkdir", "mkdirat"} & seen_b
        assert program.entries() == {}
        # A cleared slot starts from nothing.
        c = Shell("true")
        program.start(0, c.mnt_ns, None)
        c.go()
        assert not {"mkdir", "mkdirat"} & names(program.end(0, c.mnt_ns).counted)
    finally:
        program.close()


def test_anchor_splits_before_and_after(pin_dir: str, tmp_path: Path) -> None:
    require("root", "ebpf", "libseccomp", "busybox")
    anchor = number_of(archmod.X86_64, "sched_getaffinity")  # busybox nproc's call
    assert anchor is not None
    program = ResidentProgram(pin_dir, slots=2)
    program.open()
    try:
        s = Shell(f"mkdir {tmp_path}/x; busybox nproc >/dev/null; rmdir {tmp_path}/x")
        program.start(1, s.mnt_ns, anchor)
        s.go()
        reading = program.end(1, s.mnt_ns)
        assert reading.anchored
        assert "mkdir" in names(reading.before) and "mkdir" not in names(reading.counted)
        assert {"sched_getaffinity", "rmdir"} <= names(reading.counted)
    finally:
        program.close()


def test_numbers_beyond_the_table_are_kept(pin_dir: str) -> None:
    require("root", "ebpf")
    program = ResidentProgram(pin_dir, slots=2)
    program.open()
    try:
        s = Shell("busybox true")
        program.start(0, s.mnt_ns, None)
        # A call numbered 5000 from the namespace: python in the shell's namespace via nsenter.
        subprocess.run(["nsenter", "-t", str(s.proc.pid), "-m", "/usr/bin/python3", "-c",
                        "import ctypes; ctypes.CDLL(None).syscall(5000)"], check=True)
        s.go()
        reading = program.end(0, s.mnt_ns)
        assert reading.counted.get((archmod.X86_64, 5000)) == 1
    finally:
        program.close()


def test_a_full_table_is_refused_not_merged(pin_dir: str) -> None:
    require("root", "ebpf")
    program = ResidentProgram(pin_dir, slots=1)
    program.open()
    shells = [Shell("true"), Shell("true")]
    try:
        program.start(0, shells[0].mnt_ns, None)
        with pytest.raises(SlotsFullError, match="all 1 recording slots"):
            program.start(0, shells[1].mnt_ns, None)
        with pytest.raises(RecorderError, match="already being recorded"):
            program.start(0, shells[0].mnt_ns, None)
        with pytest.raises(RecorderError, match="out of range"):
            program.start(1, shells[1].mnt_ns, None)
    finally:
        for s in shells:
            s.go()
        program.close()


def test_pins_outlive_the_process_and_are_picked_up(pin_dir: str) -> None:
    require("root", "ebpf", "libseccomp")
    first = ResidentProgram(pin_dir, slots=3)
    first.open()
    s = Shell("mkdir /tmp/syscribe-resident-pin-test; rmdir /tmp/syscribe-resident-pin-test")
    first.start(2, s.mnt_ns, None)
    first.close()  # the process's fds are gone; the pinned program keeps counting
    s.go()
    second = ResidentProgram(pin_dir)
    second.open()
    try:
        assert second.picked_up and second.slots == 3
        assert second.entries() == {s.mnt_ns: 2}
        assert {"mkdir", "rmdir"} <= names(second.end(2, s.mnt_ns).counted)
        memory = second.memory()
        assert set(memory) == {"recordings", "counts", "info", "extra", "filter"}
        assert memory["counts"] >= 3 * COUNTS_SIZE
    finally:
        second.close()


def test_a_pin_set_with_another_layout_is_refused(pin_dir: str) -> None:
    require("root", "ebpf")
    first = ResidentProgram(pin_dir, slots=2)
    first.open()
    first.close()
    # Swap the counters' pin for a map of another layout: the loader must not misread it.
    os.unlink(f"{pin_dir}/counts")
    os.link(f"{pin_dir}/info", f"{pin_dir}/counts")
    with pytest.raises(RecorderError, match="another layout"):
        ResidentProgram(pin_dir).open()
