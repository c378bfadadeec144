"""The resident recorder (`syscribe recorder`): one eBPF program for every recording on the node,
fed by the hook over a root-only unix socket (syscribe.hooks.handover).

`RecorderService` is what the node agent hosts: `open()` loads or picks up the pinned program, picks
up the recordings of an earlier run and binds the socket; `serve()` runs the loop (accept, check,
start; watch each container's pidfd; at exit read its slot and write the profile and metadata
exactly as the per-container tracer does); `request_stop()` ends the loop from any thread or a
signal handler; `close()` writes what it has for each container still running, marked partial, and
leaves the recordings pinned for the next run. `start()`/`stop()` run the loop in a thread.

The socket is an interface of its own: every request is checked again here, whatever the hook
checked. The peer must be root (SO_PEERCRED); the paths must lie under this recorder's roots; the
pidfd (SCM_RIGHTS) must be a pidfd of the state's pid, alive, in a mount namespace other than the
host's. Waiting connections are bounded; beyond the bound a request is refused at once with a line
saying so, and the loop carries on.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from syscribe import ociprofile as prof
from syscribe import syscalls
from syscribe.fsutil import FsError, write_atomic
from syscribe.hooks import handover
from syscribe.hooks import result as outcomes
from syscribe.hooks.annotation import AnnotationError, request_for
from syscribe.hooks.config import HookConfig
from syscribe.hooks.log import HookLog
from syscribe.hooks.output import check_target, open_dir, read_input
from syscribe.hooks.paths import PathError, place
from syscribe.hooks.state import StateError, parse_state
from syscribe.hooks.tracer import Job, _finish
from syscribe.recorder.base import RecorderError, Target
from syscribe.recorder.resident import DEFAULT_PIN_DIR, DEFAULT_SLOTS, ResidentProgram, SlotReading

DEFAULT_STATE_DIR = "/run/syscribe/recordings"
MAX_PENDING = 64
READ_SECONDS = 2.0
STATE_VERSION = 1
MAX_STATE_FILE = 80 * 1024 * 1024  # a recording's file holds its `if:` profile (at most 64 MiB)


class RefusedError(Exception):
    """A request this recorder will not take; the message is the one line the hook shows."""


@dataclass
class Active:
    slot: int
    mnt_ns: int
    pidfd: int
    job: Job
    record: dict[str, Any]  # what the state file holds


def pidfd_pid(fd: int) -> int | None:
    """The pid behind a pidfd (-1 once it has exited), or None when `fd` is no pidfd."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def host_mount_namespaces() -> set[int]:
    """The host's mount namespace (pid 1's) and this process's: a container must be in neither."""
    found = set()
    for who in ("1", "self"):
        with contextlib.suppress(OSError):
            found.add(os.stat(f"/proc/{who}/ns/mnt").st_ino)
    return found


class RecorderService:
    def __init__(
        self,
        config: HookConfig,
        *,
        socket_path: str | None = None,
        pin_dir: str = DEFAULT_PIN_DIR,
        state_dir: str = DEFAULT_STATE_DIR,
        slots: int = DEFAULT_SLOTS,
        max_pending: int = MAX_PENDING,
        read_seconds: float = READ_SECONDS,
        log: HookLog | None = None,
    ) -> None:
        path = socket_path or config.recorder_socket
        if path is None:
            raise RecorderError("no socket: the config's recorderSocket is null; name one (or --socket)")
        if not path.startswith("/") or len(path.encode()) > 107:
            raise RecorderError(f"the socket path {path[:120]!r} must be absolute and at most 107 bytes")
        self.config = config
        self.socket_path = path
        self.state_dir = state_dir.rstrip("/")
        self.program = ResidentProgram(pin_dir, slots=slots)
        self.max_pending = max_pending
        self.read_seconds = read_seconds
        self.log = log if log is not None else HookLog(config.log_file)
        self.native = syscalls.native()
        anchor = syscalls.number_of(self.native, outcomes.ANCHOR_NAME)
        self.anchor = anchor if config.runtime_init == "trim" else None
        self.active: dict[int, Active] = {}  # by slot
        self.refused = 0
        self._sock: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._pending: dict[int, tuple[socket.socket, float]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._hosts = host_mount_namespaces()

    # -- life ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Load or pick up the program, pick up the recordings in flight, bind the socket."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._check_socket_free()
        self.program.open()
        how = "picked up the pinned program" if self.program.picked_up else "loaded and pinned the program"
        where = f"{self.program.pin_dir} ({self.program.slots} slots)"
        self.log.write(None, f"resident recorder: {how} in {where}", stderr=False)
        self._recover()
        self._bind()
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake",))

    def start(self) -> None:
        """open(), then serve() in a thread of its own (for a host such as the node agent)."""
        self.open()
        self._thread = threading.Thread(target=self.serve, name="syscribe-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.close()

    def request_stop(self) -> None:
        """Safe from a signal handler and from other threads."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Write what each running container has so far (marked partial) and let go; the recordings
        stay pinned so that the next run goes on with them. With none in flight the program is
        unloaded: an idle node pays nothing per syscall."""
        for active in list(self.active.values()):
            if exited(active.pidfd):
                # Ended before the loop saw it: written whole, as the loop would have.
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(active.pidfd)
                self._end(active, recovered=False)
                continue
            try:
                reading = self.program.read(active.slot)
            except RecorderError as exc:
                self.log.write(active.job.state.id, f"cannot read the recording at shutdown: {exc}")
                continue
            self._write(active, reading, partial=True)
        for active in self.active.values():
            self._release_fds(active)
        in_flight = bool(self.active)
        self.active.clear()
        for conn, _ in self._pending.values():
            conn.close()
        self._pending.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
        if in_flight:
            self.program.close()
        else:
            self.program.unload()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def serve(self) -> None:
        while not self._stopping:
            timeout = 1.0
            if self._pending:
                timeout = max(0.0, min(d for _, d in self._pending.values()) - time.monotonic())
            for key, _ in self._sel.select(timeout):
                data = key.data
                if data[0] == "listen":
                    self._accept()
                elif data[0] == "conn":
                    self._serve_conn(key.fd)
                elif data[0] == "exit":
                    self._exited(data[1])
                else:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 64)
            self._expire()

    # -- the socket -----------------------------------------------------------------------------
    def _check_socket_free(self) -> None:
        path = self.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RecorderError(
                f"{path} exists and is not a socket; remove it or name another recorderSocket"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # left by a recorder that died
            return
        except OSError:
            return
        finally:
            probe.close()
        raise RecorderError(f"another resident recorder answers at {path}; stop it first")

    def _bind(self) -> None:
        parent = os.path.dirname(self.socket_path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        kind = socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        sock = socket.socket(socket.AF_UNIX, kind)
        old = os.umask(0o177)  # root-only from the first moment
        try:
            sock.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        sock.listen(128)
        self._sock = sock
        self._sel.register(sock, selectors.EVENT_READ, ("listen",))

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.write(None, f"resident recorder: accept failed: {exc.strerror}")
                return
            conn.setblocking(False)
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != 0:
                self._refuse(conn, None, f"the peer runs as uid {uid}; only root may ask for a recording")
                continue
            if len(self._pending) >= self.max_pending:
                self._refuse(conn, None, f"the resident recorder is busy ({len(self._pending)} requests "
                                         "waiting); this container is not recorded, start it again later")
                continue
            self._pending[conn.fileno()] = (conn, time.monotonic() + self.read_seconds)
            self._sel.register(conn, selectors.EVENT_READ, ("conn",))

    def _expire(self) -> None:
        now = time.monotonic()
        for fd, (conn, deadline) in list(self._pending.items()):
            if deadline <= now:
                self._drop_pending(fd)
                self._refuse(conn, None, f"no request within {self.read_seconds:g} s")

    def _drop_pending(self, fd: int) -> socket.socket:
        conn, _ = self._pending.pop(fd)
        self._sel.unregister(conn)
        return conn

    def _refuse(self, conn: socket.socket, cid: str | None, message: str) -> None:
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.send(handover.answer_bytes(False, message))
        # Closing with the request unread would reset the peer's connection before it reads the
        # refusal; drain it first.
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            while conn.recv(handover.MAX_MESSAGE + 1):
                pass
        conn.close()
        self.log.write(cid, f"resident recorder refused a request: {message}", stderr=False)

    def _serve_conn(self, fd: int) -> None:
        conn = self._drop_pending(fd)
        fds: list[int] = []
        try:
            try:
                data, fds, flags, _ = socket.recv_fds(conn, handover.MAX_MESSAGE + 1, 4)
            except OSError as exc:
                self._refuse(conn, None, f"cannot read the request: {exc.strerror}")
                return
            cid: str | None = None
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > handover.MAX_MESSAGE:
                    raise RefusedError(f"the request is larger than {handover.MAX_MESSAGE} bytes or carries "
                                  "more than one descriptor")
                doc, cid = self._parse(data)
                if len(fds) != 1:
                    raise RefusedError(f"the request carries {len(fds)} descriptors; send exactly one pidfd")
                active = self._take(doc, fds[0])
            except RefusedError as exc:
                self._refuse(conn, cid, str(exc))
                return
            fds.clear()  # the pidfd now belongs to the recording
            try:
                conn.setblocking(True)
                conn.settimeout(self.read_seconds)
                conn.send(handover.answer_bytes(True, slot=active.slot))
            except OSError:
                # The hook gave up (its timeout): it let the container start unrecorded or refused it,
                # so no recording must go on behind its back.
                self._abandon(active, "the hook stopped waiting before the answer; not recording")
                conn.close()
                return
            conn.close()
            self._sel.register(active.pidfd, selectors.EVENT_READ, ("exit", active.slot))
            where = f"{active.job.placement.path} (resident recorder, slot {active.slot})"
            self.log.write(active.job.state.id, f"recording to {where}", stderr=False)
        finally:
            for extra in fds:
                with contextlib.suppress(OSError):
                    os.close(extra)

    @staticmethod
    def _parse(data: bytes) -> tuple[dict[str, Any], str | None]:
        from syscribe import strictjson

        try:
            doc = strictjson.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RefusedError("the request is not a JSON object") from None
        if not isinstance(doc, dict):
            raise RefusedError("the request is not a JSON object")
        if doc.get("v") != handover.VERSION or doc.get("op") != "record":
            raise RefusedError(f"unknown request (want v {handover.VERSION}, op record)")
        state = doc.get("state")
        cid = state.get("id") if isinstance(state, dict) and isinstance(state.get("id"), str) else None
        return doc, cid

    # -- starting a recording -------------------------------------------------------------------
    def _take(self, doc: dict[str, Any], pidfd: int) -> Active:
        """Check the request again and start counting; RefusedError with the reason otherwise (the caller
        still owns `pidfd` then)."""
        dir_fd = -1
        try:
            try:
                state = parse_state(json.dumps(doc.get("state")).encode())
                request = request_for(state.annotations, state.id)
            except (StateError, AnnotationError) as exc:
                raise RefusedError(str(exc)) from None
            if request is None:
                raise RefusedError("no io.containers.trace-syscall annotation applies to this container")
            runtime = doc.get("runtime")
            if runtime is not None and (not isinstance(runtime, str) or len(runtime) > 64):
                raise RefusedError("runtime must be a short string or null")
            started = doc.get("started")
            if isinstance(started, bool) or not isinstance(started, int | float):
                raise RefusedError("started must be a number (unix time)")
            behind = pidfd_pid(pidfd)
            if behind is None:
                raise RefusedError("the descriptor passed is not a pidfd")
            if behind != state.pid:
                raise RefusedError(f"the pidfd is of process {behind}, the state names {state.pid}")
            try:
                placement = place(request.output, self.config.output_roots)
                base = None
                if request.input is not None:
                    source = place(request.input, self.config.input_roots, "if:")
                    try:
                        base = prof.loads(read_input(source))
                    except prof.ProfileError as exc:
                        raise PathError(f"if: {request.input}: {exc}") from None
                target = self._target(state.pid, pidfd)
                dir_fd = open_dir(placement, create=self.config.create_directories)
                check_target(dir_fd, placement.name, placement.path)
                check_target(dir_fd, placement.meta_name, placement.meta_path)
            except (PathError, FsError) as exc:
                raise RefusedError(str(exc)) from None
            job = Job(
                state=state, request=request, placement=placement, dir_fd=dir_fd, pidfd=pidfd,
                target=target, host_pid_ns=0, base=base, config=self.config, runtime=runtime,
                native=self.native, started=float(started),
            )
            record = {
                "v": STATE_VERSION, "mntNs": target.mnt_ns, "pid": state.pid,
                "startTime": start_time(state.pid), "state": doc.get("state"), "runtime": runtime,
                "started": float(started), "input": prof.dumps(base) if base is not None else None,
                "anchor": self.anchor,
            }
            active = self._begin(job, target.mnt_ns, record)
        except BaseException:
            if dir_fd >= 0:
                os.close(dir_fd)
            raise
        return active

    def _target(self, pid: int, pidfd: int) -> Target:
        try:
            target = Target.of_pid(pid)
        except OSError as exc:
            raise RefusedError(f"cannot read the namespaces of process {pid}: {exc.strerror}") from None
        if exited(pidfd):
            raise RefusedError(f"the container process {pid} has exited")
        if target.mnt_ns in self._hosts:
            raise RefusedError(
                f"process {pid} is in the host's mount namespace, so its syscalls cannot be told apart "
                "from the host's; give the container a mount namespace of its own"
            )
        return target

    def _begin(self, job: Job, mnt_ns: int, record: dict[str, Any]) -> Active:
        slot = self._free_slot()
        record["slot"] = slot
        try:
            write_atomic(self._state_path(slot), json.dumps(record), 0o600, sync=False)
        except FsError as exc:
            raise RefusedError(f"cannot keep the recording's state: {exc}") from None
        try:
            self.program.start(slot, mnt_ns, self.anchor)
        except RecorderError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self._state_path(slot))
            raise RefusedError(str(exc)) from None
        active = Active(slot, mnt_ns, job.pidfd, job, record)
        self.active[slot] = active
        return active

    def _free_slot(self) -> int:
        used = set(self.active) | set(self.program.entries().values())
        for slot in range(self.program.slots):
            if slot not in used and not os.path.lexists(self._state_path(slot)):
                return slot
        raise RefusedError(
            f"all {self.program.slots} recording slots are in use; this container is not recorded "
            "(start the recorder with more --slots)"
        )

    def _state_path(self, slot: int) -> str:
        return f"{self.state_dir}/{slot}.json"

    def _abandon(self, active: Active, why: str) -> None:
        with contextlib.suppress(RecorderError):
            self.program.end(active.slot, active.mnt_ns)
        self.active.pop(active.slot, None)
        with contextlib.suppress(OSError):
            os.unlink(self._state_path(active.slot))
        self._release_fds(active)
        self.log.write(active.job.state.id, why, stderr=False)

    # -- ending one -----------------------------------------------------------------------------
    def _exited(self, slot: int) -> None:
        active = self.active.get(slot)
        if active is None:
            return
        self._sel.unregister(active.pidfd)
        self._end(active, recovered=False)

    def _end(self, active: Active, *, recovered: bool, partial: bool = False) -> None:
        # Stop counting first, write, and only then clear the slot and the state file: a crash in
        # between leaves what a restart needs to write the profile again.
        try:
            self.program.forget(active.mnt_ns)
            reading = self.program.read(active.slot)
        except RecorderError as exc:
            self.log.write(active.job.state.id, f"reading the recording failed: {exc}; nothing was written")
            reading = None
        if reading is not None:
            self._write(active, reading, partial=partial, recovered=recovered)
        with contextlib.suppress(RecorderError):
            self.program.end(active.slot, active.mnt_ns)
        with contextlib.suppress(OSError):
            os.unlink(self._state_path(active.slot))
        self.active.pop(active.slot, None)
        self._release_fds(active)

    def _write(self, active: Active, reading: SlotReading, *, partial: bool, recovered: bool = False) -> None:
        counted, before = reading.recordings()
        extra: dict[str, object] = {"recorder": "resident", "partial": partial}
        if recovered:
            extra["recovered"] = True
        _finish(active.job, self.log, counted, before, anchored=reading.anchored, ended=time.time(),
                extra_meta=extra)

    @staticmethod
    def _release_fds(active: Active) -> None:
        for fd in (active.pidfd, active.job.dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- restart --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Take the recordings of an earlier run back: each state file names a slot, a pid and its
        start time. A container still running goes on being recorded; one that ended while no
        recorder ran is written now (its counts are whole: the program kept counting)."""
        kernel = self.program.entries()
        known: set[int] = set()
        try:
            names = sorted(os.listdir(self.state_dir))
        except OSError:
            names = []
        for name in names:
            path = f"{self.state_dir}/{name}"
            if not name.endswith(".json") or not name[:-5].isdigit():
                continue
            try:
                active, alive = self._restore(path)
            except (RefusedError, OSError, ValueError, KeyError, TypeError) as exc:
                self.log.write(None, f"resident recorder: dropped the recording in {path}: {exc}")
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            known.add(active.mnt_ns)
            self.active[active.slot] = active
            counted = kernel.get(active.mnt_ns) == active.slot
            if not counted:
                self.log.write(active.job.state.id, "the recording's namespace was no longer counted; "
                               "writing what its slot holds")
            if alive and counted:
                self._sel.register(active.pidfd, selectors.EVENT_READ, ("exit", active.slot))
                self.log.write(active.job.state.id, f"resident recorder: picked up the recording in slot "
                               f"{active.slot}", stderr=False)
            else:
                # Still running but no longer counted: what there is, marked partial.
                self._end(active, recovered=True, partial=alive)
        for mnt_ns, slot in kernel.items():
            if mnt_ns not in known:
                self.log.write(None, f"resident recorder: slot {slot} counted namespace {mnt_ns} for no "
                               "known container; cleared")
                with contextlib.suppress(RecorderError):
                    self.program.end(slot, mnt_ns)

    def _restore(self, path: str) -> tuple[Active, bool]:
        from syscribe import strictjson
        from syscribe.fsutil import read_limited

        record = strictjson.loads(read_limited(path, MAX_STATE_FILE).decode("utf-8"))
        if not isinstance(record, dict) or record.get("v") != STATE_VERSION:
            raise RefusedError("unknown state file version")
        slot, mnt_ns, pid = int(record["slot"]), int(record["mntNs"]), int(record["pid"])
        if f"{slot}.json" != os.path.basename(path) or not 0 <= slot < self.program.slots:
            raise RefusedError(f"slot {slot} does not match its file or the {self.program.slots} slots")
        state = parse_state(json.dumps(record["state"]).encode())
        request = request_for(state.annotations, state.id)
        if request is None or state.pid != pid:
            raise RefusedError("the recorded state names no recording")
        placement = place(request.output, self.config.output_roots)
        base = prof.loads(record["input"]) if record.get("input") is not None else None
        alive = False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # Gone: a pidfd of ourselves stands in, so that every Active holds one to close.
            pidfd = os.pidfd_open(os.getpid())
        else:
            same = start_time(pid) == record.get("startTime") and record.get("startTime") is not None
            try:
                same = same and os.stat(f"/proc/{pid}/ns/mnt").st_ino == mnt_ns
            except OSError:
                same = False
            alive = same and not exited(pidfd)
        try:
            dir_fd = open_dir(placement, create=self.config.create_directories)
        except BaseException:
            os.close(pidfd)
            raise
        job = Job(
            state=state, request=request, placement=placement, dir_fd=dir_fd, pidfd=pidfd,
            target=Target(pid, mnt_ns, 0, 0), host_pid_ns=0, base=base, config=self.config,
            runtime=record.get("runtime"), native=self.native, started=float(record["started"]),
        )
        return Active(slot, mnt_ns, pidfd, job, record), alive


__all__ = ["DEFAULT_STATE_DIR", "RecorderService", "RefusedError"]
