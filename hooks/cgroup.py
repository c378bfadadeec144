"""Moving the per-container tracer out of the runtime's cgroup into one of its own (`tracerCgroup`).

The runtime runs the hook in its own cgroup, which under CRI-O with `conmon_cgroup = "pod"` is the
pod's: a tracer left there counts against the pod's memory limit for as long as it records. So the
tracer, first thing, moves itself into the configured cgroup in every hierarchy it is in (cgroup v1
controllers, named v1 hierarchies and the v2 unified one, as on hybrid hosts), creating it where
missing. Memory it allocates afterwards is charged there; pages it shares with the hook from the fork
stay charged where they were (cgroup v1 does not move charges unless asked).

The parsing is pure; `move` is the thin shell. A move that fails somewhere is a warning, not a failure:
recording matters more than where its memory is counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One line of /proc/<pid>/cgroup: `id:controllers:path`."""

    controllers: str  # "memory", "cpu,cpuacct", "name=systemd", "" for the v2 hierarchy
    path: str

    @property
    def label(self) -> str:
        return self.controllers or "unified"


def parse_proc_cgroup(text: str) -> list[Hierarchy]:
    out: list[Hierarchy] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append(Hierarchy(parts[1], parts[2]))
    return out


def mount_points(mountinfo: str) -> list[tuple[frozenset[str], str]]:
    """Each cgroup mount of a hierarchy's root: (its options, where); the v2 one has no options. Only
    root mounts: inside a cgroup namespace the paths of /proc/self/cgroup would not line up."""
    found: list[tuple[frozenset[str], str]] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue
        if tail[0] == "cgroup2":
            found.append((frozenset(), _unescape(fields[4])))
        elif tail[0] == "cgroup":
            found.append((frozenset(tail[2].split(",")), _unescape(fields[4])))
    return found


def mount_of(h: Hierarchy, mounts: list[tuple[frozenset[str], str]]) -> str | None:
    """Where `h` is mounted: the v2 mount for the unified line, else a v1 mount with its controllers."""
    wanted = frozenset(h.controllers.split(",")) if h.controllers else frozenset()
    for options, point in mounts:
        if (not wanted and not options) or (wanted and wanted <= options):
            return point
    return None


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def plan(
    hierarchies: Iterable[Hierarchy], mounts: list[tuple[frozenset[str], str]], target: str
) -> list[tuple[str, str]]:
    """(label, directory) to join for each hierarchy not already in `target`."""
    steps: list[tuple[str, str]] = []
    rel = target.strip("/")
    for h in hierarchies:
        if h.path.rstrip("/") == "/" + rel:
            continue
        point = mount_of(h, mounts)
        if point is None:
            continue  # not mounted here: nothing to move in
        steps.append((h.label, os.path.join(point, rel) if rel else point))
    return steps


def move(target: str, pid: int | None = None) -> list[str]:
    """Move `pid` (default: this process) into `target` in every hierarchy; the problems, if any."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            hierarchies = parse_proc_cgroup(f.read())
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mounts = mount_points(f.read())
    except OSError as exc:
        return [f"stayed in the runtime's cgroup: cannot read the cgroups: {exc.strerror}"]
    problems: list[str] = []
    for label, directory in plan(hierarchies, mounts, target):
        try:
            _make(directory, cpuset=label == "cpuset" or "cpuset" in label.split(","))
            with open(os.path.join(directory, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(f"{pid}\n")
        except OSError as exc:
            problems.append(f"{label}: {exc.strerror}")
    if problems:
        return [f"stayed in the runtime's cgroup for {'; '.join(problems)} (tracerCgroup {target})"]
    return []


def _make(directory: str, *, cpuset: bool) -> None:
    """mkdir -p; a new v1 cpuset starts with no CPUs and no memory nodes (no task could join it), so
    each level made gets its parent's."""
    parent = os.path.dirname(directory)
    if os.path.isdir(directory):
        return
    if parent != directory:
        _make(parent, cpuset=cpuset)
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        return
    if cpuset:
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(parent, name), encoding="ascii") as f:
                value = f.read().strip()
            with open(os.path.join(directory, name), "w", encoding="ascii") as f:
                f.write(value + "\n")
