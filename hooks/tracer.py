"""The per-container tracer: attach to the container's mount namespace, wait for its exit, write the
profile and its metadata. Runs in the detached process syscribe.hooks.spawn starts; everything it
needs arrives in a Job, prepared (and checked) by the hook before the container starts.

It waits on a pidfd of the runtime's init process: the runtime execs the workload in that process, so
the pid is the workload's, and pid 1 of the container's pid namespace ends the container when it
exits. Every outcome is one log line with the container id; every failure says what to do.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from syscribe import __version__
from syscribe.arch import Arch
from syscribe.hooks import result as outcomes
from syscribe.hooks.annotation import Request
from syscribe.hooks.config import HookConfig
from syscribe.hooks.log import HookLog
from syscribe.hooks.output import write_outputs
from syscribe.hooks.paths import Placement
from syscribe.hooks.spawn import Channel
from syscribe.hooks.state import State
from syscribe.ociprofile import Profile, ProfileError, dumps
from syscribe.recorder.base import RecorderError, Recording, Target, Tracer
from syscribe.recorder.coreobject import CoreTracer


@dataclass(frozen=True)
class Job:
    state: State
    request: Request
    placement: Placement
    dir_fd: int  # the profile's directory, opened by the hook without following symlinks
    pidfd: int  # the container's init process
    target: Target
    host_pid_ns: int  # the hook's own pid namespace inode (bcc selects by pid namespace)
    base: Profile | None  # the `if:` profile
    config: HookConfig
    runtime: str | None
    native: Arch
    started: float  # wall clock, when the hook started


class StoppedError(Exception):
    pass


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise StoppedError(signal.Signals(signum).name)


def open_tracer_for(job: Job) -> tuple[Tracer, CoreTracer | None]:
    """A tracer of the configured backend, and the same tracer again when it tells the runtime's
    setup apart (a core tracer with the anchor), else None."""
    from syscribe.recorder import open_tracer
    from syscribe.recorder.coreobject import check_kernel
    from syscribe.syscalls import number_of

    backend = job.config.backend
    if backend in ("core", "auto"):
        try:
            check_kernel()
        except RecorderError:
            if backend == "core":
                raise
        else:
            trim = job.config.runtime_init == "trim"
            anchor = number_of(job.native, outcomes.ANCHOR_NAME) if trim else None
            core = CoreTracer(native=job.native, anchor=anchor)
            return core, (core if anchor is not None else None)
    tracer = open_tracer(backend)
    if tracer.name == "bcc" and job.target.pid_ns_ino == job.host_pid_ns:
        raise RecorderError(
            "the container shares the host's pid namespace, which the bcc backend selects tasks by; "
            "use the core backend"
        )
    return tracer, None


class _Held:
    """Stop signals that arrive once the container has exited: the recording is whole then, and
    writing it is short and bounded, so the tracer finishes and then says what it held."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.warnings: list[str] = []  # about the tracer itself (its cgroup), for the outcome

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.names.append(signal.Signals(signum).name)

    def hold(self) -> None:
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)

    def note(self) -> str:
        if not self.names:
            return ""
        names = " and ".join(dict.fromkeys(self.names))
        return f"; {names} arrived after the container exited and waited until this was done"


def trace(job: Job, channel: Channel, log: HookLog) -> int:
    """The tracer's whole life; the exit status of its process. Every outcome is one log line."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    held = _Held()
    if job.config.tracer_cgroup is not None:
        # First thing, before the BPF object is loaded: what it allocates is counted there.
        from syscribe.hooks.cgroup import move

        held.warnings.extend(move(job.config.tracer_cgroup))
    try:
        return _trace(job, channel, log, held)
    except StoppedError as why:
        channel.error(f"the tracer was stopped ({why})")
        log.write(job.state.id, f"the tracer was stopped ({why}); nothing was written")
        return 1


def _trace(job: Job, channel: Channel, log: HookLog, held: _Held) -> int:
    cid = job.state.id
    try:
        tracer, anchored_tracer = open_tracer_for(job)
        tracer.attach(job.target)
    except (RecorderError, OSError) as exc:
        channel.error(f"cannot attach the tracer: {exc}")
        return 1
    try:
        if not channel.attached():
            log.write(cid, "the hook stopped waiting before the tracer attached; not recording")
            return 1
        if _exited(job.pidfd, 0):
            # It may have run entirely between the check and the attach; a partial recording is no
            # profile.
            log.write(cid, "the container exited before the tracer attached; nothing was written")
            return 1
        try:
            _exited(job.pidfd, None)
        except StoppedError as why:
            log.write(cid, f"the tracer was stopped ({why}) before the container exited; nothing was written")
            return 1
        held.hold()
        ended = time.time()
        counted = tracer.snapshot()
        if anchored_tracer is not None:
            before, anchored = anchored_tracer.snapshot_before(), anchored_tracer.anchored()
        else:
            before, anchored = Recording(backend=tracer.name), False
    except (RecorderError, OSError) as exc:
        log.write(cid, f"reading the recording failed: {exc}; nothing was written{held.note()}")
        return 1
    except StoppedError as why:
        log.write(cid, f"the tracer was stopped ({why}); nothing was written")
        return 1
    finally:
        tracer.close()
    return _finish(job, log, counted, before, anchored=anchored, ended=ended, held=held)


def _finish(
    job: Job,
    log: HookLog,
    counted: Recording,
    before: Recording,
    *,
    anchored: bool,
    ended: float,
    held: _Held | None = None,
    extra_meta: Mapping[str, object] | None = None,
) -> int:
    """Name the counts, build the profile and its metadata (plus `extra_meta`), write both, log it.
    The resident recorder (syscribe.recorder.service) writes through this too."""
    from syscribe.syscalls import LibseccompMissingError

    cid = job.state.id
    held = held or _Held()
    try:
        counted_t, before_t, result = _outcome(job, counted, before, anchored=anchored, held=held)
    except (outcomes.NothingRecordedError, ProfileError, LibseccompMissingError) as exc:
        log.write(cid, f"{exc}{held.note()}")
        return 1
    meta = outcomes.metadata(
        container_id=cid,
        annotations=job.state.annotations,
        key=job.request.key,
        runtime=job.runtime,
        backend=counted.backend,
        started=_iso(job.started),
        ended=_iso(ended),
        seconds=ended - job.started,
        output=job.placement.path,
        input_path=job.request.input,
        runtime_init=job.config.runtime_init,
        anchored=anchored,
        counted=counted_t,
        before=before_t,
        outcome=result,
        version=__version__,
    )
    if extra_meta:
        meta.update(extra_meta)
    try:
        write_outputs(
            job.dir_fd,
            job.placement,
            dumps(result.profile),
            meta,
            on_wait=lambda why: log.write(cid, why),
            # Told to stop: no more waiting for other writers (the digest still tells readers).
            stop_waiting=lambda: bool(held.names),
        )
    except OSError as exc:
        log.write(cid, f"cannot write the profile: {exc}{held.note()}")
        return 1
    log.write(cid, _wrote(job, result) + held.note())
    return 0


def _outcome(
    job: Job, counted: Recording, before: Recording, *, anchored: bool, held: _Held
) -> tuple[outcomes.Tally, outcomes.Tally, outcomes.Outcome]:
    """The counts named (all of them, and those before the anchor) and the profile built from them,
    with every warning: the recordings', the build's and the tracer's own."""
    from syscribe.syscalls import name_of

    trim = job.config.runtime_init == "trim"
    counted_t = outcomes.tally(counted.counts, name_of)
    before_t = outcomes.tally(before.counts, name_of)
    result = outcomes.build(
        counted_t,
        before_t,
        native=job.native,
        trim=trim,
        anchored=anchored,
        base=job.base,
        runtime_extra=_runtime_extra(job),
    )
    warnings = [*counted.warnings, *before.warnings, *result.warnings, *held.warnings]
    if trim and not anchored and counted.backend != "core":
        warnings.append(f"the {counted.backend} backend cannot tell the runtime's setup apart; kept all")
    result = outcomes.Outcome(result.profile, tuple(dict.fromkeys(warnings)), result.excluded, result.added)
    return counted_t, before_t, result


def _wrote(job: Job, result: outcomes.Outcome) -> str:
    """The log line of a profile written: how many syscalls, what was left out or added, warnings."""
    left_out = f", {len(result.excluded)} of the runtime's setup left out" if result.excluded else ""
    if result.added:
        left_out += f", {len(result.added)} the runtime may call after the filter added"
    return (
        f"wrote {job.placement.path}: {len(result.profile.named())} syscalls{left_out}"
        + "".join(f"; warning: {w}" for w in result.warnings)
    )


def _runtime_extra(job: Job) -> frozenset[str]:
    from syscribe import runtimes

    if not job.config.add_runtime_syscalls or job.runtime not in runtimes.AFTER_FILTER:
        return frozenset()
    return runtimes.after_filter(job.runtime)


def _exited(pidfd: int, timeout_ms: int | None) -> bool:
    """Whether the process behind `pidfd` has exited, waiting up to `timeout_ms` (None: until it has)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
