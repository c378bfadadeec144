"""Where the tracer's cgroups are (pure parsing of /proc/<pid>/cgroup and mountinfo); the move itself is
tested for real in test_hook_real.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syscribe.hooks.cgroup import Hierarchy, mount_points, parse_proc_cgroup, plan

# This machine's layout: v1 controllers, a named v1 hierarchy and the v2 one (hybrid).
PROC = """10:hugetlb:/
9:name=systemd:/
4:memory:/process_api/abc
2:cpu,cpuacct:/pod/x
0::/
"""
MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpuacct,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:39 / /sys/fs/cgroup/huge\\040tlb rw,relatime - cgroup cgroup rw,hugetlb
50 31 0:35 /inner /mnt/elsewhere rw,relatime - cgroup cgroup rw,memory
"""


def test_parse_and_plan_on_a_hybrid_host() -> None:
    hierarchies = parse_proc_cgroup(PROC)
    assert hierarchies[2] == Hierarchy("memory", "/process_api/abc")
    steps = dict(plan(hierarchies, mount_points(MOUNTINFO), "/syscribe"))
    assert steps == {
        "hugetlb": "/sys/fs/cgroup/huge tlb/syscribe",  # mountinfo's octal escapes undone
        "name=systemd": "/sys/fs/cgroup/systemd/syscribe",
        "memory": "/sys/fs/cgroup/memory/syscribe",  # the root mount, not the bind of /inner
        "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/syscribe",
        "unified": "/sys/fs/cgroup/unified/syscribe",
    }


def test_already_there_and_unmounted_hierarchies_are_left_alone() -> None:
    hierarchies = parse_proc_cgroup("4:memory:/syscribe\n7:blkio:/\n")
    assert plan(hierarchies, mount_points(MOUNTINFO), "/syscribe/") == []


@given(st.text(max_size=300), st.text(max_size=300))
def test_garbage_never_crashes(proc: str, mountinfo: str) -> None:
    for _label, directory in plan(parse_proc_cgroup(proc), mount_points(mountinfo), "/t"):
        assert directory.endswith("/t")
