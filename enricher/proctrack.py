"""The process tracker: the container of every new process, read as it starts.

A process that makes one denied syscall and is gone before its audit record is read (a seccomp kill,
a short `sh -c` in a container) leaves nothing in /proc to look up. The tracker hears of every fork,
exec and exit on the node from the kernel's process events connector and has the resolver read the
new process's cgroup right then (ContainerResolver.track); the resolver remembers container processes,
so the record's pid is known after the process is gone.

The connector (linux/connector.h, linux/cn_proc.h) is a NETLINK_CONNECTOR datagram socket bound to the
multicast group CN_IDX_PROC. A PROC_CN_MCAST_LISTEN message subscribes; the kernel acknowledges it with
a PROC_EVENT_NONE event carrying our ack number plus one, then sends one datagram per event:
nlmsghdr, cn_msg, proc_event. pyroute2 0.9 has a class for this protocol
(`pyroute2.netlink.connector.cn_proc.ProcEventSocket`), measured against this reader in
`bench/netlink.py` (docs/enricher.md, "Why netlink uses the standard library"); this module reads the
socket with the standard library's socket and struct, the netlink framing from `nlmsg.py` (shared with
the audit source), the two connector structs itself.

Which kernels let whom subscribe: the subscriber must be in the initial pid, user and network
namespaces (the kernel silently ignores others: no acknowledgement comes, which is how that is told;
the connector exists in the initial network namespace only); before Linux
6.6 binding to the group needs CAP_NET_ADMIN (EPERM otherwise), since 6.6 any user may listen, and a
subscription may name the events it wants (FORK, EXEC and EXIT here: the kernel then drops the UID,
GID, SID, COMM... events before they are queued). Older kernels ignore that second, filtered message
and send everything; unwanted events are skipped here.

Bounded work: one event costs at most two bounded /proc reads and a cached container lookup; the only
queue is the socket's receive buffer (a fixed size). When a fork storm outruns the reader the kernel
drops events and the next read fails with ENOBUFS: counted, reported, and the subscription is sent
again (on kernels whose subscription state is per socket that is harmless, and it restores event
delivery where the kernel stopped sending for lack of listeners); the processes whose events were lost
are looked up the ordinary way when their records come, which only fails if they are gone by then.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from syscribe.enricher import nlmsg

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_NOOP = nlmsg.NLMSG_NOOP
NLMSG_ERROR = nlmsg.NLMSG_ERROR
NLMSG_DONE = nlmsg.NLMSG_DONE
NLMSG_OVERRUN = nlmsg.NLMSG_OVERRUN
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
WANTED_EVENTS = PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT

_NLMSGHDR = nlmsg.HEADER
_CN_MSG = struct.Struct("=IIIIHH")  # id.idx, id.val, seq, ack, len, flags
_PROC_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns (event_data follows at offset 16)
_FORK = struct.Struct("=iiii")  # parent_pid, parent_tgid, child_pid, child_tgid
_EXEC = struct.Struct("=ii")  # process_pid, process_tgid
_EXIT = struct.Struct("=iiII")  # process_pid, process_tgid, exit_code, exit_signal
_ACK = struct.Struct("=I")  # err
_HEADERS = _NLMSGHDR.size + _CN_MSG.size
MAX_DATAGRAM = 65536
# Events read per wakeup before the loop looks at its stop flag and timers again.
BATCH = 256
SO_RCVBUFFORCE = nlmsg.SO_RCVBUFFORCE
RCVBUF = 4 * 1024 * 1024  # ~4000 queued events: a burst of forks waits here rather than being lost


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """One process event. `pid` is the process (thread group) it is about; for FORK `parent` is the
    thread group that forked it. `thread` is True for events about a thread other than a leader."""

    what: int
    pid: int
    parent: int | None
    timestamp_ns: int
    thread: bool = False
    ack: int = 0  # for PROC_EVENT_NONE: the acknowledged subscription's ack number + 1
    error: int = 0  # for PROC_EVENT_NONE: the kernel's answer to a subscription (an errno, 0: done)


# --- pure core: the messages ------------------------------------------------------------------------


def subscription(op: int, *, port: int, seq: int, ack: int, events: int | None = None) -> bytes:
    """The message that (un)subscribes socket `port`; with `events`, only to those (Linux 6.6+)."""
    payload = struct.pack("=II", op, events) if events is not None else struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, ack, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, seq, port) + cn


def _event(data: bytes | memoryview, at: int, length: int, ack: int) -> ProcEvent | None:
    """The proc_event of `length` bytes at offset `at`; None if it is short or of a kind not used."""
    if length < _PROC_EVENT.size:
        return None
    what, _cpu, stamp = _PROC_EVENT.unpack_from(data, at)
    body, room = at + _PROC_EVENT.size, length - _PROC_EVENT.size
    if what == PROC_EVENT_FORK and room >= _FORK.size:
        _ppid, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(data, body)
        return ProcEvent(what, child_tgid, parent_tgid, stamp, thread=child_pid != child_tgid)
    if what == PROC_EVENT_EXEC and room >= _EXEC.size:
        _pid, tgid = _EXEC.unpack_from(data, body)
        return ProcEvent(what, tgid, None, stamp)
    if what == PROC_EVENT_EXIT and room >= _EXIT.size:
        pid, tgid, _code, _signal = _EXIT.unpack_from(data, body)
        return ProcEvent(what, tgid, None, stamp, thread=pid != tgid)
    if what == PROC_EVENT_NONE and room >= _ACK.size:
        (error,) = _ACK.unpack_from(data, body)
        return ProcEvent(what, 0, None, stamp, ack=ack, error=error)
    return None


def parse(data: bytes | memoryview) -> tuple[list[ProcEvent], int]:
    """The events in one datagram from the connector, and how many of its parts were malformed.

    A datagram holds netlink messages back to back; each is read only within its own stated length,
    and one that claims more than is there ends the datagram (counted as malformed).
    """
    events: list[ProcEvent] = []
    messages, rest = nlmsg.walk(data)
    bad = 1 if rest >= _NLMSGHDR.size else 0  # a broken header ended the walk
    for message in messages:
        mtype, end = message.type, message.end
        if mtype == NLMSG_DONE:
            if end - message.start < _CN_MSG.size:
                bad += 1
            else:
                idx, val, _cseq, ack, cn_len, _cflags = _CN_MSG.unpack_from(data, message.start)
                start = message.start + _CN_MSG.size
                if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) or cn_len > end - start:
                    bad += 1
                else:
                    event = _event(data, start, cn_len, ack)
                    if event is not None:
                        events.append(event)
        elif mtype not in (NLMSG_NOOP, NLMSG_ERROR, NLMSG_OVERRUN):
            bad += 1
    return events, bad


# --- the shell: a socket and a thread -----------------------------------------------------------------


class Tracked(Protocol):
    """What the tracker tells (ContainerResolver implements it)."""

    def track(self, pid: int, parent: int | None = None, at_ns: int | None = None) -> bool: ...

    def exited(self, pid: int, when: float | None = None) -> None: ...

    def expire(self, now: float | None = None) -> int: ...


class TrackerUnavailableError(RuntimeError):
    """The connector cannot be used here; the message says why and what to do."""


@dataclass(slots=True)
class TrackerStats:
    datagrams: int = 0
    forks: int = 0
    execs: int = 0
    exits: int = 0
    remembered: int = 0  # container processes the resolver remembered
    overruns: int = 0  # ENOBUFS: the kernel dropped events because the socket buffer was full
    resubscribed: int = 0
    malformed: int = 0
    foreign: int = 0  # datagrams not sent by the kernel
    errors: int = 0
    cpu_seconds: float = 0.0  # the tracker thread's own CPU time


class ProcessTracker:
    """Feeds `sink` the node's process starts and exits from a thread. `start()`, then `stop()`."""

    def __init__(
        self,
        sink: Tracked,
        *,
        report: Callable[[str, str], None] | None = None,
        rcvbuf: int = RCVBUF,
        expire_every: float = 30.0,
        answer_timeout: float = 2.0,
    ) -> None:
        self.sink = sink
        self.stats = TrackerStats()
        self._report = report or (lambda code, message: None)
        self._rcvbuf = rcvbuf
        self._expire_every = expire_every
        self._answer_timeout = answer_timeout
        self._sock: socket.socket | None = None
        self._port = 0
        self._ack = 0
        self._listens = 0  # plain subscriptions sent: kernels before 6.6 count each one
        self._wake_r, self._wake_w = -1, -1
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._problem: str | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe and start the thread; TrackerUnavailableError (one line) when the kernel says no."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._open()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="proctrack", daemon=True)
        self._thread.start()
        self._ready.wait(self._answer_timeout + 5.0)
        if self._problem is not None or not self._ready.is_set():
            problem = self._problem or "the process tracker did not start"
            self.stop()
            raise TrackerUnavailableError(problem)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._close()

    def __enter__(self) -> ProcessTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The socket's netlink port id (0 before start)."""
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    # the socket --------------------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR
            )
        except OSError as exc:
            raise TrackerUnavailableError(
                f"cannot open the kernel's process events connector: {exc.strerror} "
                "(a kernel without CONFIG_PROC_EVENTS, or a seccomp policy that forbids netlink)"
            ) from None
        try:
            nlmsg.join(sock, CN_IDX_PROC, self._rcvbuf)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise TrackerUnavailableError(
                    "the kernel lets only root (CAP_NET_ADMIN) hear process events before Linux 6.6: "
                    "run the enricher as root"
                ) from None
            raise TrackerUnavailableError(f"cannot join the process events group: {exc.strerror}") from None
        self._sock = sock
        self._port = sock.getsockname()[0]

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            # Kernels before 6.6 count listeners per message, not per socket (and would go on making
            # events for nobody): one IGNORE per LISTEN. Since 6.6 the count is per socket and a
            # repeated IGNORE changes nothing.
            for _ in range(max(1, min(self._listens, 1000))):
                self._send(sock, PROC_CN_MCAST_IGNORE)
            sock.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _send(self, sock: socket.socket, op: int, events: int | None = None) -> int:
        ack = secrets.randbelow(1 << 30)
        try:
            sock.send(subscription(op, port=self._port, seq=0, ack=ack, events=events))
        except OSError as exc:
            self.stats.errors += 1
            self._report("proctrack_error", f"process tracker: cannot send to the connector: {exc.strerror}")
        return ack

    def _subscribe(self, sock: socket.socket) -> None:
        # The plain form first: every kernel acknowledges it. The filtered form cannot be acknowledged
        # (the acknowledgement is an event of a kind the filter drops), and older kernels ignore it.
        self._ack = self._send(sock, PROC_CN_MCAST_LISTEN)
        self._listens += 1
        self._send(sock, PROC_CN_MCAST_LISTEN, WANTED_EVENTS)

    # the loop ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        started_cpu = time.thread_time()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        buf = bytearray(MAX_DATAGRAM)
        view = memoryview(buf)
        self._subscribe(sock)
        answer_by = time.monotonic() + self._answer_timeout
        next_expire = time.monotonic() + self._expire_every
        try:
            while not self._stop.is_set():
                if not self._ready.is_set() and time.monotonic() > answer_by:
                    self._problem = (
                        "the kernel's process events connector did not answer the subscription: the "
                        "enricher must run in the host's pid, user and network namespaces (hostPID: true, "
                        "hostNetwork: true)"
                    )
                    self._ready.set()
                    return
                poller.poll(250)
                self._receive(sock, buf, view)
                now = time.monotonic()
                if now >= next_expire:
                    next_expire = now + self._expire_every
                    self.sink.expire()
                self.stats.cpu_seconds = time.thread_time() - started_cpu
        except Exception as exc:  # the enricher goes on without the tracker, and says so
            self.stats.errors += 1
            if not self._ready.is_set():
                self._problem = f"the process tracker failed to start: {exc!r}"
            else:
                self._report("proctrack_error", f"process tracker stopped: {exc!r}")
        finally:
            self.stats.cpu_seconds = time.thread_time() - started_cpu
            self._ready.set()

    def _receive(self, sock: socket.socket, buf: bytearray, view: memoryview) -> None:
        """Handle the datagrams waiting on `sock`, up to BATCH of them, each read into `buf` (`view`)."""
        for _ in range(BATCH):
            try:
                size, sender = sock.recvfrom_into(buf, MAX_DATAGRAM, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._overrun(sock)
                    continue
                self.stats.errors += 1
                self._report("proctrack_error", f"process tracker: reading events failed: {exc.strerror}")
                self._stop.wait(1.0)
                break
            if sender[0] != 0:  # only the kernel (port 0) speaks for the connector
                self.stats.foreign += 1
                continue
            self.stats.datagrams += 1
            try:
                self._handle(view[:size])
            except Exception as exc:  # one bad event must not end the tracking of all others
                self.stats.errors += 1
                self._report("proctrack_error", f"process tracker: an event failed: {exc!r}")

    def _handle(self, data: memoryview) -> None:
        events, bad = parse(data)
        self.stats.malformed += bad
        sink = self.sink
        for event in events:
            if event.thread:
                continue  # audit records name the thread group, whose leader is tracked
            what = event.what
            if what == PROC_EVENT_FORK:
                self.stats.forks += 1
                if sink.track(event.pid, event.parent, event.timestamp_ns):
                    self.stats.remembered += 1
            elif what == PROC_EVENT_EXEC:
                # Read again: a runtime moves its init into the container's cgroup between fork and exec.
                self.stats.execs += 1
                if sink.track(event.pid, None, event.timestamp_ns):
                    self.stats.remembered += 1
            elif what == PROC_EVENT_EXIT:
                self.stats.exits += 1
                sink.exited(event.pid, self._wall(event.timestamp_ns))
            elif what == PROC_EVENT_NONE and event.ack == self._ack + 1 and not self._ready.is_set():
                if event.error:
                    self._problem = (
                        f"the kernel refused the process events subscription: {os.strerror(event.error)}"
                        " (run the enricher as root)"
                    )
                    self._stop.set()
                self._ready.set()

    def _overrun(self, sock: socket.socket) -> None:
        self.stats.overruns += 1
        self.stats.resubscribed += 1
        self._report(
            "proctrack_overrun",
            f"process tracker: the kernel dropped process events (socket buffer full, {self.stats.overruns} "
            "times so far): processes that started and ended meanwhile may get no pod; resubscribed",
        )
        self._subscribe(sock)

    @staticmethod
    def _wall(monotonic_ns: int) -> float:
        return time.time() - (time.monotonic_ns() - monotonic_ns) / 1e9
