"""The syscalls runc and crun make after loading a container's filter, measured again on this machine.

syscribe.runtimes lists them so that a profile recorded outside a runtime can be enforced in one
(`record/merge --for-runtime`). This test runs busybox containers whose filter logs every syscall
(defaultAction SCMP_ACT_LOG), reads the SECCOMP records from the audit netlink group, keeps those the
runtime made (not the workload, whose comm is the applet's name) and fails when the runtime needed one
that syscribe.runtimes does not list.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from syscribe import bundle, runtimes, syscalls
from syscribe.arch import subarches
from syscribe.enricher.events import AuditEvent, EventAssembler
from syscribe.enricher.sources import NetlinkSource
from tests.support.prereq import require

RUNS = 10
WORKLOAD = "true"  # a busybox applet: its records carry comm="true"
# execve is how the runtime hands over to the workload; every recorded profile already allows it.
HANDOVER = frozenset({"execve"})


def _logged_by_runtime(events: list[AuditEvent], pids: set[int]) -> set[str]:
    return {
        e.syscall_name or f"#{e.syscall}"
        for e in events
        if e.kind == "seccomp" and e.action == "log" and e.pid in pids and e.comm != WORKLOAD
    }


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_runtime_needs_only_what_syscribe_runtimes_lists(
    busybox_rootfs: Path, tmp_path: Path, runtime: str
) -> None:
    require("root", runtime)
    arches = [a.oci for a in subarches(syscalls.native())]
    seccomp = {"defaultAction": "SCMP_ACT_LOG", "architectures": arches}
    source = NetlinkSource(follow=True)
    assembler = EventAssembler(hold_seconds=0.0)
    events: list[AuditEvent] = []
    pids: set[int] = set()

    def drain_run(until: float) -> None:
        """Read until this run's workload record came: the runtime's records come before it (its init
        makes them, then execs the workload), so then they are all in. Bounded: a record the kernel
        dropped (audit backlog) must not hang the test, only make this run count for less."""
        known = {e.pid for e in events if e.comm == WORKLOAD}
        while time.monotonic() < until:
            batch = source.read(0.05)
            if batch is None or batch.types is None:
                continue
            for kind, payload in zip(batch.types, batch.lines, strict=True):
                events.extend(assembler.feed_netlink(kind, payload, 0, time.time()))
            events.extend(assembler.flush(None))
            if {e.pid for e in events if e.comm == WORKLOAD} - known:
                return

    try:
        for _ in range(RUNS):
            name = f"tail-{uuid.uuid4().hex[:12]}"
            b = bundle.make_bundle(
                tmp_path / name, busybox_rootfs, [WORKLOAD], seccomp=seccomp, runtime=runtime
            )
            try:
                result = bundle.run_container(b, name, runtime=runtime)
            finally:
                subprocess.run([runtime, "delete", "--force", name], capture_output=True, check=False)
            assert result.returncode == 0, result.stderr
            drain_run(time.monotonic() + 30)
            # The workload's own records name the container's pid (the runtime's init execs it).
            pids |= {e.pid for e in events if e.comm == WORKLOAD and e.pid is not None}
        events.extend(assembler.flush(None))
    finally:
        source.close()

    assert pids, "no SECCOMP record of the workload arrived: is seccomp logging (actions_logged) on?"
    measured = _logged_by_runtime(events, pids) - HANDOVER
    missing = measured - runtimes.after_filter(runtime)
    assert not missing, (
        f"{runtime} made {sorted(missing)} after loading the filter, which syscribe.runtimes does not "
        f"list; add them there (measured: {sorted(measured)})"
    )
