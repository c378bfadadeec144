"""The eBPF anchor the hook uses: calls before the first anchor syscall are counted apart.

A Python workload makes sched_getscheduler, then prctl (the anchor), then getpriority; the counters
must put the first before the anchor and the other two after it. Without an anchor (what
`syscribe record` loads), everything is counted as before.
"""

from __future__ import annotations

import struct
import sys

import pytest

from syscribe import arch as archmod
from syscribe.recorder import coreobject as obj
from syscribe.recorder.base import RecorderError
from syscribe.recorder.coreobject import CoreTracer
from syscribe.recorder.names import name_recording
from syscribe.recorder.workload import run_traced
from syscribe.syscalls import number_of
from tests.support.prereq import require

WORKLOAD = [
    sys.executable, "-c",
    "import ctypes, os\n"
    "os.sched_getscheduler(0)\n"
    "ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE\n"
    "os.getpriority(os.PRIO_PROCESS, 0)\n",
]


def test_rodata_layout() -> None:
    base = obj.config_bytes(7, obj.COMPAT_X86)
    assert obj.rodata_bytes(7, obj.COMPAT_X86) == base + struct.pack("=II", obj.ANCHOR_NONE, 0)
    assert obj.rodata_bytes(7, obj.COMPAT_X86, 157) == base + struct.pack("=II", obj.ANCHOR_SYSCALL, 157)
    for bad in (-1, obj.NR_SLOTS, 1 << 40, True):
        with pytest.raises(RecorderError, match="anchor syscall number"):
            obj.rodata_bytes(7, obj.COMPAT_X86, bad)


def test_extra_entries_carry_their_phase() -> None:
    assert obj.extra_phase(obj.EXTRA_KEY.pack(5000, 0, obj.PHASE_BEFORE)) == obj.PHASE_BEFORE
    assert obj.extra_phase(obj.EXTRA_KEY.pack(5000, 0, obj.PHASE_COUNTED)) == obj.PHASE_COUNTED


def test_calls_before_the_anchor_are_counted_apart() -> None:
    require("root", "ebpf")
    native = archmod.X86_64
    anchor = number_of(native, "prctl")
    assert anchor is not None
    tracer = CoreTracer(native=native, anchor=anchor)
    try:
        result = run_traced(WORKLOAD, tracer)
        assert result.exit_status == 0
        after = name_recording(tracer.snapshot()).names
        before = name_recording(tracer.snapshot_before()).names
        assert tracer.anchored()
    finally:
        tracer.close()
    assert "sched_getscheduler" in before and "sched_getscheduler" not in after
    assert {"prctl", "getpriority"} <= after
    assert "getpriority" not in before and "prctl" not in before
    assert "execve" in before  # the exec came first


def test_without_an_anchor_everything_is_counted() -> None:
    require("root", "ebpf")
    tracer = CoreTracer()
    try:
        run_traced(WORKLOAD, tracer)
        names = name_recording(tracer.snapshot()).names
        assert not tracer.anchored()
        assert not tracer.snapshot_before().counts
    finally:
        tracer.close()
    assert {"sched_getscheduler", "prctl", "getpriority", "execve"} <= names
