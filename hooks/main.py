"""`syscribe-hook`: the OCI prestart hook CRI-O and podman run for containers carrying the
`io.containers.trace-syscall` annotation (hooks.d: crio-config/hooks.d/syscribe-hook.json).

It reads the container's state from stdin, decides from the annotations whether to record, and if so
checks everything it can before the container starts (the output path against the configured roots,
the `if:` profile, the container's namespaces), starts a detached tracer and exits once the tracer is
attached, or when the configured timeout passes. The import path is kept lean: a container without the
annotation costs a JSON parse, and nothing heavier is imported until one has it.

Exit status: 0 when the container may start (recorded, or not, per `onFailure: start`), 1 when it must
not (`onFailure: fail`, or a broken hook config), 2 for a usage error.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable

from syscribe.hooks.annotation import AnnotationError, Request, request_for
from syscribe.hooks.state import MAX_STATE_BYTES, State, StateError, parse_state

# `typing` costs the hook ~3-10 ms to import; mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the modules are imported where they are needed
    from syscribe.hooks.config import HookConfig
    from syscribe.hooks.log import HookLog
    from syscribe.hooks.tracer import Job
    from syscribe.ociprofile import Profile
    from syscribe.recorder.base import Target

# The runtime writes the state and closes stdin at once; this only bounds a broken caller.
STDIN_SECONDS = 5.0
# syscribe.hooks.config.DEFAULT_PATH (tested equal): importing that module here would load dataclasses
# on every container start, most of the hook's import time.
DEFAULT_CONFIG = "/etc/syscribe/hook.json"
USAGE = "usage: syscribe-hook [--config PATH]  (an OCI prestart hook: the runtime passes the state on stdin)"


class UsageError(ValueError):
    pass


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    try:
        config_path, explicit = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"syscribe-hook: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    if config_path is None:
        print(USAGE, file=sys.stdout)
        return 0
    try:
        state = parse_state(read_stdin(0, MAX_STATE_BYTES, STDIN_SECONDS))
    except StateError as exc:
        return refuse(config_path, explicit, None, str(exc))
    try:
        request = request_for(state.annotations, state.id)
    except AnnotationError as exc:
        return refuse(config_path, explicit, state.id, str(exc))
    if request is None:
        return 0
    try:
        return record(state, request, config_path, explicit, started)
    except Exception as exc:
        # A bug must not print a traceback where a runtime shows one line, nor hang a start.
        return refuse(config_path, explicit, state.id, f"internal error ({type(exc).__name__}: {exc})")


def parse_args(argv: list[str]) -> tuple[str | None, bool]:
    """(config path, named explicitly); (None, False) for --help."""
    path, explicit = DEFAULT_CONFIG, False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            return None, False
        if arg == "--config":
            if not args:
                raise UsageError("--config needs a path")
            path, explicit = args.pop(0), True
        elif arg.startswith("--config="):
            path, explicit = arg.split("=", 1)[1], True
        else:
            shown = arg if len(arg) <= 40 else arg[:40] + "..."
            raise UsageError(f"unknown argument {shown!r}")
    if not path.startswith("/"):
        raise UsageError("--config takes an absolute path (the runtime runs hooks from another directory)")
    return path, explicit


def read_stdin(fd: int, limit: int, seconds: float) -> bytes:
    """Up to `limit` + 1 bytes of `fd` until EOF, within `seconds`; StateError when it never ends."""
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(max(1, int(remaining * 1000))):
            raise StateError(f"no end of the container state on stdin within {seconds:g} s")
        try:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
        except OSError as exc:
            raise StateError(f"cannot read the container state from stdin: {exc.strerror}") from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def refuse(config_path: str, explicit: bool, container: str | None, problem: str) -> int:
    """Report a problem found before any recording started, and apply the configured policy."""
    return _with_config(
        config_path, explicit, lambda config, log: fail(log, container, problem, config.fails_closed)
    )


def _with_config(
    config_path: str, explicit: bool, action: Callable[[HookConfig, HookLog], int]
) -> int:
    """Load the config and open its log for `action`; a broken config stops the container (exit 1)."""
    from syscribe.hooks.config import ConfigError, load_config
    from syscribe.hooks.log import HookLog

    try:
        config = load_config(config_path, required=explicit)
    except ConfigError as exc:
        print(f"syscribe-hook: {exc}", file=sys.stderr)
        return 1
    log = HookLog(config.log_file)
    try:
        return action(config, log)
    finally:
        log.close()


def fail(log: HookLog, container: str | None, problem: str, closed: bool) -> int:
    effect = "the container is not started (onFailure: fail)" if closed else "the container starts unrecorded"
    log.write(container, f"{problem}; {effect}")
    return 1 if closed else 0


def record(state: State, request: Request, config_path: str, explicit: bool, started: float) -> int:
    """The annotated case: check, start the tracer, wait for it."""
    return _with_config(
        config_path, explicit, lambda config, log: _record(state, request, config, log, started)
    )


def _record(state: State, request: Request, config: HookConfig, log: HookLog, started: float) -> int:
    if config.recorder_socket is not None:
        handed = _hand_over(state, request, config, log, started)
        if handed is not None:
            return handed
    return _trace(state, request, config, log, started)


def _hand_over(
    state: State, request: Request, config: HookConfig, log: HookLog, started: float
) -> int | None:
    """Ask the resident recorder; None when none runs (then the hook starts a tracer of its own).
    Only what is cheap is checked here: the recorder checks everything again, against its own roots."""
    from syscribe.hooks import handover
    from syscribe.hooks.paths import PathError, place

    assert config.recorder_socket is not None
    cid = state.id
    try:
        placement = place(request.output, config.output_roots)
        if request.input is not None:
            place(request.input, config.input_roots, "if:")
        pidfd = _pidfd(state.pid)
    except (PathError, _TargetError) as exc:
        return fail(log, cid, str(exc), config.fails_closed)
    try:
        doc: dict[str, object] = {
            "ociVersion": state.oci_version, "id": state.id, "status": state.status, "pid": state.pid,
            "bundle": state.bundle,
        }
        if state.root is not None:
            doc["root"] = state.root
        data = handover.request_bytes(doc, state.annotations, request.key, _runtime_name(), started)
        answer = handover.hand_over(config.recorder_socket, data, [pidfd], config.timeout_seconds)
    finally:
        os.close(pidfd)
    if isinstance(answer, str):
        return None
    if not answer.ok:
        return fail(log, cid, f"not recording: the resident recorder refused: {answer.message}",
                    config.fails_closed)
    log.write(
        cid,
        f"recording to {placement.path} (resident recorder, slot {answer.slot}, handed over in "
        f"{answer.seconds * 1000:.0f} ms)",
        stderr=False,
    )
    return 0


def _trace(state: State, request: Request, config: HookConfig, log: HookLog, started: float) -> int:
    """No resident recorder: a detached per-container tracer."""
    from syscribe.fsutil import FsError
    from syscribe.hooks.paths import PathError
    from syscribe.hooks.tracer import close_quietly

    fds: list[int] = []
    try:
        try:
            job = _job(state, request, config, started, fds)
        except (PathError, FsError, _TargetError) as exc:
            return fail(log, state.id, str(exc), config.fails_closed)
        return _launch(job, log)
    finally:
        for fd in fds:
            close_quietly(fd)


def _job(state: State, request: Request, config: HookConfig, started: float, fds: list[int]) -> Job:
    """Everything the tracer needs, checked before the container starts. The descriptors it opens go
    to `fds` as they are opened, so the caller closes them whatever fails after."""
    from syscribe import syscalls
    from syscribe.hooks.output import check_target, open_dir
    from syscribe.hooks.paths import place
    from syscribe.hooks.tracer import Job

    placement = place(request.output, config.output_roots)
    base = _input_profile(request, config)
    pidfd = _pidfd(state.pid)
    fds.append(pidfd)
    target = _target(state.pid, pidfd)
    dir_fd = open_dir(placement, create=config.create_directories)
    fds.append(dir_fd)
    check_target(dir_fd, placement.name, placement.path)
    check_target(dir_fd, placement.meta_name, placement.meta_path)
    native = syscalls.native()
    host_pid_ns = os.stat("/proc/self/ns/pid").st_ino
    return Job(
        state=state,
        request=request,
        placement=placement,
        dir_fd=dir_fd,
        pidfd=pidfd,
        target=target,
        host_pid_ns=host_pid_ns,
        base=base,
        config=config,
        runtime=_runtime_name(),
        native=native,
        started=started,
    )


def _input_profile(request: Request, config: HookConfig) -> Profile | None:
    """The `if:` profile, parsed; a PathError naming it when it cannot be read or is not a profile."""
    from syscribe import ociprofile as prof
    from syscribe.hooks.output import read_input
    from syscribe.hooks.paths import PathError, place

    if request.input is None:
        return None
    source = place(request.input, config.input_roots, "if:")
    try:
        return prof.loads(read_input(source))
    except prof.ProfileError as exc:
        raise PathError(f"if: {request.input}: {exc}") from None


def _launch(job: Job, log: HookLog) -> int:
    """Start the detached tracer and wait until it has attached, or says why it cannot."""
    from syscribe.hooks import spawn
    from syscribe.hooks.tracer import trace

    cid, config = job.state.id, job.config
    tracer_log = log.for_tracer()
    keep = {job.dir_fd, job.pidfd} | ({log.fd} if log.fd is not None else set())
    result = spawn.launch(
        lambda channel: trace(job, channel, tracer_log),
        keep=keep,
        output_fd=log.fd,
        timeout=config.timeout_seconds,
        # timeoutSeconds bounds the whole hook, its checks (the `if:` parse...) included.
        since=time.monotonic() - max(0.0, time.time() - job.started),
    )
    if not result.ok:
        return fail(log, cid, f"not recording: {result.message}", config.fails_closed)
    log.write(
        cid,
        f"recording to {job.placement.path} (tracer pid {result.tracer_pid}, attached in "
        f"{result.seconds * 1000:.0f} ms)",
        stderr=False,
    )
    return 0


class _TargetError(OSError):
    def __str__(self) -> str:
        return str(self.args[0])


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise _TargetError(f"the container process {pid} is gone (it exited before the hook ran)") from None
    except OSError as exc:
        raise _TargetError(f"cannot watch the container process {pid}: {exc.strerror}") from None


def _target(pid: int, pidfd: int) -> Target:
    from syscribe.recorder.base import Target

    try:
        target = Target.of_pid(pid)
    except OSError as exc:
        raise _TargetError(
            f"cannot read the namespaces of the container process {pid}: {exc.strerror}"
        ) from None
    # The pidfd was opened first: if the process is still there now, the namespaces read are its own.
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if poller.poll(0):
        raise _TargetError(f"the container process {pid} exited before it could be traced")
    if target.mnt_ns == os.stat("/proc/self/ns/mnt").st_ino:
        raise _TargetError(
            "the container shares the host's mount namespace, so its syscalls cannot be told apart from "
            "the host's; give it a mount namespace of its own"
        )
    return target


def _runtime_name() -> str | None:
    """The runtime that runs this hook is its parent (runc, crun)."""
    try:
        with open(f"/proc/{os.getppid()}/comm", "rb") as f:
            name = f.read(64).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return name or None
