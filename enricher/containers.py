"""Host pid -> container -> pod, from the node itself (/proc and the runtimes' state directories).

`ContainerResolver.lookup(pid)` reads /proc/<pid>/stat (the start time, so that a reused pid is never
taken for the process that had it before) and /proc/<pid>/cgroup (which container: see cgroup.py), then
finds the container's annotations in the state directory of whichever runtime made it (see
statedirs.py). No API server is needed; an optional `PodLabelSource` (kube.py) adds pod labels.

A process that makes one denied syscall and is gone before its record is read (a seccomp kill, a short
`sh -c` in a container) leaves nothing in /proc to read. `track(pid)` is for the process tracker
(proctrack.py), which calls it as each process starts: it reads the cgroup right then and remembers
container processes (host processes are the default when nothing is known), so `lookup()` answers for
them after they are gone. `exited(pid)` notes when a remembered process ended, so that a record written
after that is not taken for it (its pid may have a new owner); `expire()` forgets what ended long ago.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from syscribe import fsutil
from syscribe.enricher import runtimestate, statedirs
from syscribe.enricher.cgroup import (
    CONTAINER_ID,
    POD_UID,
    ContainerRef,
    may_name_container,
    parse_proc_cgroup,
)
from syscribe.enricher.gonepids import GonePids
from syscribe.enricher.statedirs import DEFAULT_STATE_DIRS, Found, StateDirs, read_bounded

if TYPE_CHECKING:
    from syscribe.enricher.kube import PodLabelSource

MAX_PROC_FILE = 64 * 1024
PID_MAX = 4 * 1024 * 1024  # PID_MAX_LIMIT on 64-bit kernels
HISTORY_PER_PID = 4
# A record's time and a process's start time come from different clocks (the record's is wall time,
# the start time is counted from boot, and /proc/stat's btime has whole seconds): only a process that
# started this much later than a record is known not to be the one that wrote it.
START_SLACK = 2.0
PROC_RECHECK = 10.0  # how long a missing /proc (--proc) is taken as missing before it is looked for again
# How long what is known of an exited process is kept: records are read within seconds of being
# written, minutes when the enricher catches up on a backlog.
MAX_AGE = 600.0
# A process whose start time is this many clock ticks after the start event the tracker got is
# another process that took the pid since (the tick count is truncated, the event is stamped later).
TICK_SLACK = 2

# What a runtime's own process is called while it sets a container up, before the workload's exec.
RUNTIME_COMMS = frozenset({"runc", "runc:[0:PARENT]", "runc:[1:CHILD]", "runc:[2:INIT]", "crun", "youki"})


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    container_id: str | None
    # Who made the container: the manager its cgroup names (cri-o, containerd, docker, podman), else
    # the one its annotations name, else the OCI runtime whose state dir holds it (runc, crun).
    runtime: str | None
    container_name: str | None
    pod: str | None
    namespace: str | None
    pod_uid: str | None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lookup:
    info: ContainerInfo | None  # None: not a container (a host process) or unknown
    settled: bool  # False: still being set up, or its bundle is not readable yet: ask again later


@dataclass(slots=True)
class ResolverStats:
    lookups: int = 0
    cache_hits: int = 0
    gone: int = 0  # the process had exited: answered from what was known
    unsettled: int = 0
    bundles_read: int = 0
    bundles_missing: int = 0  # a container whose state was not (yet) found in any state dir
    tracked: int = 0  # container processes remembered as they started (track)
    inherited: int = 0  # of those, children gone before they could be read: their parent's container
    exits: int = 0  # remembered processes whose end was noted
    expired: int = 0  # entries forgotten MAX_AGE after their process ended


# --- pure helpers ------------------------------------------------------------------------------------


def parse_stat(data: bytes) -> tuple[str, int] | None:
    """(comm, start time in clock ticks since boot) from /proc/<pid>/stat."""
    # comm is in parentheses and may itself hold spaces and ')': the last ')' ends it.
    open_at, close_at = data.find(b"("), data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        return None
    fields = data[close_at + 1 :].split()
    # fields[0] is field 3 (state); starttime is field 22.
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    comm = data[open_at + 1 : close_at].decode("utf-8", "replace")
    return comm, int(fields[19])


def parse_btime(data: bytes) -> int | None:
    """The boot time (seconds since the epoch) from /proc/stat."""
    for line in data.splitlines():
        if line.startswith(b"btime "):
            value = line[6:].strip()
            return int(value) if value.isdigit() else None
    return None


# --- the resolver ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    """What is known of one process that had a pid."""

    start: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    lookup: Lookup
    exited: float | None = None  # seconds since the epoch, when known


def _own_pid_namespace(proc: Path) -> bool:
    """Whether `proc` is mounted for this process's pid namespace (its `self` names our pid)."""
    try:
        return os.readlink(proc / "self") == str(os.getpid())
    except OSError:
        return False


def _exists(pid: int) -> bool:
    """Whether `pid` (> 0) has a process in our pid namespace; signal 0 is only the check, nothing is sent.
    A process we may not signal (EPERM) exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class ContainerResolver:
    """pid -> Lookup, cached by (pid, process start time) and by container id. Thread-safe."""

    def __init__(
        self,
        *,
        proc: Path = Path("/proc"),
        state_dirs: Sequence[Path] | None = None,
        api: PodLabelSource | None = None,
        cache_size: int = 4096,
        max_age: float = MAX_AGE,
    ) -> None:
        self.proc = proc
        self.state_dirs = tuple(DEFAULT_STATE_DIRS if state_dirs is None else state_dirs)
        self.api = api
        self.cache_size = max(1, cache_size)
        self.max_age = max_age
        self.stats = ResolverStats()
        self._lock = threading.Lock()
        # pid -> newest first, at most HISTORY_PER_PID: also what a gone process is answered from
        self._procs: OrderedDict[int, list[_Seen]] = OrderedDict()
        self._containers: OrderedDict[str, ContainerInfo] = OrderedDict()
        self._statedirs = StateDirs(self.state_dirs)
        # /proc/stat has a line per CPU: larger than the per-process files on big machines.
        btime_data = read_bounded(proc, ["stat"], 16 * MAX_PROC_FILE)
        self._btime = parse_btime(btime_data) if btime_data is not None else None
        self._ticks = os.sysconf("SC_CLK_TCK")
        # kill(pid, 0) tells a pid without a process (ESRCH) without a path walk, five times cheaper than
        # the failed open of /proc/<pid>/stat; it asks our own pid namespace, so only where `proc` is it.
        self._probe_by_signal = _own_pid_namespace(proc)
        # A `proc` that is not there (a log read off-node with --proc pointing nowhere) has no process
        # to find: asked again every PROC_RECHECK seconds rather than with an open per lookup.
        self._proc_missing_until = 0.0
        # Without a boot time a process cannot be placed in time, and a miss teaches nothing.
        self._gone_pids = (
            GonePids(PID_MAX, time.time(), margin=START_SLACK + 2.0)
            if self._btime is not None and self._ticks > 0 else None
        )

    # public ---------------------------------------------------------------------------------------------

    def lookup(self, pid: int, at: float | None = None) -> Lookup:
        """What container (and pod) host process `pid` is in.

        `at` (seconds since the epoch, e.g. the audit record's time) lets a record that outlived its
        process be told from the pid's next owner: a process that started after `at` did not write it.
        """
        with self._lock:
            self.stats.lookups += 1
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
            return Lookup(None, True)
        gone_pids = self._gone_pids
        if gone_pids is not None and at is not None and gone_pids.gone(pid, at):
            # Its process was gone when this record was already old: whoever has the pid now
            # started after the record (lookup would find just that), so /proc need not be asked.
            return self._gone(pid, at)
        looked = time.time()
        if looked < self._proc_missing_until:
            return self._gone(pid, at)
        first = None if self._probe_by_signal and not _exists(pid) else self._stat(pid)
        if first is None:
            if not self._probe_by_signal and not os.path.isdir(self.proc):
                self._proc_missing_until = looked + PROC_RECHECK
            if gone_pids is not None:
                gone_pids.add(pid, looked)
            return self._gone(pid, at)
        comm, start = first
        if at is not None and self._started_after(start, at):
            return self._gone(pid, at)
        with self._lock:
            known = self._find(pid, start)
            if known is not None and known.settled:
                self.stats.cache_hits += 1
                self._procs.move_to_end(pid)
        if known is not None and known.settled:
            return self._with_pod(known)
        cgroup = self._read_proc(pid, "cgroup")
        again = self._stat(pid)
        if cgroup is None or again is None or again[1] != start:
            # Exited (or exited and the pid was taken) while we read: what we read may be another's.
            return self._gone(pid, at)
        result = self._resolve(parse_proc_cgroup(cgroup), comm)
        self._remember(pid, start, result)
        if not result.settled:
            with self._lock:
                self.stats.unsettled += 1
            return result
        return self._with_pod(result)

    def container(self, container_id: str, runtime: str | None = None) -> ContainerInfo | None:
        """The container's info from the state dirs (cached), or None if no state dir knows it yet."""
        if not isinstance(container_id, str) or not CONTAINER_ID.fullmatch(container_id):
            return None
        with self._lock:
            info = self._containers.get(container_id)
            if info is not None:
                self._containers.move_to_end(container_id)
                return info
        found = self._statedirs.find(container_id)
        if found is None:
            with self._lock:
                self.stats.bundles_missing += 1
            return None
        info = self._info(container_id, runtime, found)
        with self._lock:
            self.stats.bundles_read += 1
            self._containers[container_id] = info
            while len(self._containers) > self.cache_size:
                self._containers.popitem(last=False)
        return info

    def track(self, pid: int, parent: int | None = None, at_ns: int | None = None) -> bool:
        """Read what container process `pid` is in now, as it starts; remember it if it is in one.

        `at_ns` is when the kernel said it started (fork) or exec'd (CLOCK_MONOTONIC ns): a process
        found at that pid that started later is another one. A child already gone when asked about
        (`parent` is its parent's pid) is given its parent's container: a fork starts in its parent's
        cgroup. True when the process was remembered.
        """
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
            return False
        cgroup = self._read_proc(pid, "cgroup")
        if cgroup is None:
            return self._inherit(pid, parent, at_ns)
        if not may_name_container(cgroup):
            return False
        first = self._stat(pid)
        if first is None:
            return self._inherit(pid, parent, at_ns)
        comm, start = first
        if at_ns is not None and start > self._ticks_at(at_ns) + TICK_SLACK:
            return False  # the pid's next owner, the one the event was about is gone
        result = self._resolve(parse_proc_cgroup(cgroup), comm)
        if result.info is None:
            return False
        self._remember(pid, start, result)
        with self._lock:
            self.stats.tracked += 1
        return True

    def exited(self, pid: int, when: float | None = None) -> None:
        """Note that the newest process remembered at `pid` ended (at `when`, seconds since the epoch)."""
        when = time.time() if when is None else when
        with self._lock:
            history = self._procs.get(pid)
            if not history or history[0].exited is not None or history[0].lookup.info is None:
                return
        # A thread group's leader can end before its other threads, which go on making syscalls under
        # its pid: only the last one ends the process.
        try:
            threads = len(os.listdir(f"{self.proc}/{pid}/task"))
        except OSError:
            threads = 0
        if threads > 1:
            return
        with self._lock:
            history = self._procs.get(pid)
            if history and history[0].exited is None:
                history[0].exited = when
                self._procs.move_to_end(pid)  # an ended process's records are the ones still to come
                self.stats.exits += 1

    def expire(self, now: float | None = None) -> int:
        """Forget processes that ended more than `max_age` ago, and note the end of remembered container
        processes no longer there (their exit went unseen). Returns how many entries were forgotten."""
        now = time.time() if now is None else now
        dropped = 0
        live: list[tuple[int, int]] = []
        with self._lock:
            for pid in list(self._procs):
                history = self._procs[pid]
                kept = [s for s in history if s.exited is None or now - s.exited <= self.max_age]
                dropped += len(history) - len(kept)
                if not kept:
                    del self._procs[pid]
                    continue
                self._procs[pid] = kept
                if kept[0].exited is None and kept[0].lookup.info is not None:
                    live.append((pid, kept[0].start))
            self.stats.expired += dropped
        for pid, start in live:
            stat_now = self._stat(pid)
            if stat_now is None or stat_now[1] != start:
                with self._lock:
                    current = self._procs.get(pid)
                    if current and current[0].start == start and current[0].exited is None:
                        current[0].exited = now
        return dropped

    # /proc ------------------------------------------------------------------------------------------------

    def _stat(self, pid: int) -> tuple[str, int] | None:
        data = self._read_proc(pid, "stat")
        return parse_stat(data) if data is not None else None

    def _read_proc(self, pid: int, name: str) -> bytes | None:
        """/proc/<pid>/<name>, bounded. The path is built from an int and a constant, so the one open
        needs no walk (this is on every lookup's path, cached or not)."""
        try:
            return fsutil.read_limited(f"{self.proc}/{pid}/{name}", MAX_PROC_FILE, follow_symlinks=False)
        except fsutil.FsError:
            return None

    def _start_epoch(self, start_ticks: int) -> float | None:
        if self._btime is None or self._ticks <= 0:
            return None
        return self._btime + start_ticks / self._ticks

    def _started_after(self, start_ticks: int, at: float) -> bool:
        started = self._start_epoch(start_ticks)
        return started is not None and started > at + START_SLACK

    def _ticks_at(self, monotonic_ns: int) -> int:
        """A CLOCK_MONOTONIC time as /proc/<pid>/stat counts start times (clock ticks of CLOCK_BOOTTIME)."""
        suspended = time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
        return int((monotonic_ns / 1e9 + suspended) * self._ticks)

    def _inherit(self, pid: int, parent: int | None, at_ns: int | None) -> bool:
        """Remember a child gone before it was read as being where its parent is (see track)."""
        if parent is None or at_ns is None or parent == pid:
            return False
        forked = self._ticks_at(at_ns)
        with self._lock:
            history = self._procs.get(parent)
            seen = history[0] if history else None
            # Only the parent's own entry: not one of an earlier owner of its pid.
            if seen is None or seen.exited is not None or seen.lookup.info is None or seen.start > forked:
                return False
            self.stats.tracked += 1
            self.stats.inherited += 1
        self._remember(pid, forked, seen.lookup)
        return True

    # caches -----------------------------------------------------------------------------------------------

    def _find(self, pid: int, start: int) -> Lookup | None:
        for seen in self._procs.get(pid, ()):
            if seen.start == start:
                return seen.lookup
        return None

    def _remember(self, pid: int, start: int, result: Lookup) -> None:
        with self._lock:
            history = [seen for seen in self._procs.get(pid, ()) if seen.start != start]
            self._procs[pid] = [_Seen(start, result), *history][:HISTORY_PER_PID]
            self._procs.move_to_end(pid)
            while len(self._procs) > self.cache_size:
                self._procs.popitem(last=False)

    def _gone(self, pid: int, at: float | None) -> Lookup:
        """The process is no longer there (or the pid is someone else's now): what was known of it."""
        with self._lock:
            self.stats.gone += 1
            history = list(self._procs.get(pid, ()))
        for seen in history:  # newest first
            if at is not None and self._started_after(seen.start, at):
                continue
            if at is not None and seen.exited is not None and seen.exited < at - START_SLACK:
                # It had ended before the record was written, and so had every earlier owner of the pid:
                # a process nobody remembered (a host one) wrote it.
                break
            info = seen.lookup.info
            if not seen.lookup.settled and info is not None and info.container_id is not None:
                # Its container's state was not readable when the process was seen; it may be now.
                found = self.container(info.container_id, info.runtime)
                if found is not None:
                    info = found if found.pod_uid is not None else replace(found, pod_uid=info.pod_uid)
            # Settled whatever the API says: nothing more will ever be learnt about a gone process.
            return Lookup(self._with_pod(Lookup(info, True)).info, True)
        return Lookup(None, True)

    # resolution -------------------------------------------------------------------------------------------

    def _resolve(self, ref: ContainerRef | None, comm: str) -> Lookup:
        if ref is None or (ref.container_id is None and not ref.monitor):
            if comm in RUNTIME_COMMS:
                # A runtime's init before it moved itself into the container's cgroup.
                return Lookup(None, False)
            if ref is not None and ref.pod_uid is not None:
                return Lookup(ContainerInfo(None, None, None, None, None, ref.pod_uid), True)
            return Lookup(None, True)
        if ref.container_id is None:
            return Lookup(None, True)  # the runtime's monitor (conmon): a host process beside the container
        info = self.container(ref.container_id, ref.runtime)
        if info is None:
            partial = ContainerInfo(ref.container_id, ref.runtime, None, None, None, ref.pod_uid)
            return Lookup(partial, False)
        if info.pod_uid is None and ref.pod_uid is not None:
            info = replace(info, pod_uid=ref.pod_uid)
        return Lookup(info, True)

    def _with_pod(self, result: Lookup) -> Lookup:
        """Add the API's labels (and names the bundle lacked); unsettled while the API has not seen
        the pod yet, so that the pipeline asks again within its backlog window."""
        info = result.info
        if self.api is None or info is None or info.pod_uid is None:
            return result
        meta = self.api.pod(info.pod_uid)
        if meta is None:
            return Lookup(info, False) if result.settled and self.api.synced() else result
        merged = replace(
            info,
            pod=info.pod or meta.name,
            namespace=info.namespace or meta.namespace,
            labels={**info.labels, **meta.labels},
        )
        return Lookup(merged, result.settled)

    def _info(self, container_id: str, cgroup_runtime: str | None, found: Found) -> ContainerInfo:
        facts = runtimestate.pod_facts(found.facts.annotations)
        runtime = cgroup_runtime or facts.manager or found.layout
        name = facts.container_name or found.facts.name
        if name is None:
            name = self._statedirs.storage_name(found, container_id)
        labels = statedirs.pod_labels(found, facts.sandbox)
        pod_uid = facts.pod_uid if facts.pod_uid is not None and POD_UID.fullmatch(facts.pod_uid) else None
        return ContainerInfo(
            container_id=container_id,
            runtime=runtime,
            container_name=name,
            pod=facts.pod,
            namespace=facts.namespace,
            pod_uid=pod_uid,
            labels=labels,
        )
