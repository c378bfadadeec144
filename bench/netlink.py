"""The enricher's two netlink readers against pyroute2's: `python -m bench.netlink` (root).

The enricher reads two netlink sockets with the standard library: the process events connector
(enricher/proctrack.py) and the audit multicast group (enricher/sources.py). pyroute2 (0.9) has a
class for the first (`pyroute2.netlink.connector.cn_proc.ProcEventSocket`) and a generic
`NetlinkSocket` for the second. This measures the reading and decoding alone (no /proc reads, no
parsing of audit records), each reader in the main thread while a thread runs what makes events:

1. process events: a shell runs --processes short processes (fork + exec of /bin/true); the reader's
   thread CPU time (time.thread_time) per event, the events it got (fork, exec, exit), and how many
   datagrams the kernel dropped (ENOBUFS), with the same 4 MiB receive buffer for both;
2. audit: a child process makes --records SECCOMP records (a filter that logs getppid, called in a
   loop); the reader's CPU per record, records got, drops.

Readers run one after the other, so that each has the machine to itself; numbers go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from syscribe.enricher import proctrack, sources

SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20
STORM = "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
# A child that logs `n` getppid calls through a seccomp filter (SCMP_ACT_LOG) once told to go.
AUDIT_STORM = """
import os, sys
from syscribe import ociprofile, seccomp
n = int(sys.argv[1])
seccomp.build(ociprofile.parse({
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_LOG"}],
})).load()
print(os.getpid(), flush=True)
sys.stdin.readline()
for _ in range(n):
    os.getppid()
"""


@dataclass
class Reading:
    reader: str
    events: int
    dropped: int  # ENOBUFS: the kernel's queue for us overflowed (datagrams lost, not counted)
    cpu_seconds: float
    wall_seconds: float
    broken: bool = False  # the reader gave up: every read after an overrun fails again

    @property
    def us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0


class Reader:
    """Reads a socket in the calling thread (pyroute2's sockets answer only the thread that made them:
    its get() in another thread never returns) while `storm` runs in a thread of its own; `recv()`
    reads what one wakeup brings and says how many events it held."""

    def __init__(self, name: str, recv: Callable[[], int], fileno: int) -> None:
        self.name = name
        self._recv = recv
        self._fileno = fileno
        self.events = 0
        self.dropped = 0
        self.cpu = 0.0
        self.broken = False
        self._last_error: OSError | None = None

    def read_during(self, storm: Callable[[], object], quiet: float = 1.5) -> float:
        """Read until the storm is over and nothing came for `quiet` seconds; the wall time."""
        thread = threading.Thread(target=storm)
        poller = select.poll()
        poller.register(self._fileno, select.POLLIN)
        started, cpu = time.monotonic(), time.thread_time()
        thread.start()
        last = time.monotonic()
        while thread.is_alive() or time.monotonic() - last < quiet:
            if not poller.poll(100):
                continue
            try:
                got = self._recv()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                if exc is self._last_error:
                    # pyroute2 keeps the first error of its transport and raises it on every later
                    # read: the socket is lost for good
                    self.broken = True
                    break
                self._last_error = exc
                self.dropped += 1
                continue
            if got:  # a wakeup may bring nothing of ours (other messages, pyroute2's own)
                self.events += got
                last = time.monotonic()
        thread.join()
        self.cpu = time.thread_time() - cpu
        return last - started


# --- process events -----------------------------------------------------------------------------------


def _hand_proc() -> tuple[Reader, Callable[[], None]]:
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, proctrack.NETLINK_CONNECTOR
    )
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind((0, proctrack.CN_IDX_PROC))
    port = sock.getsockname()[0]
    sock.send(proctrack.subscription(proctrack.PROC_CN_MCAST_LISTEN, port=port, seq=0, ack=1))
    buf = bytearray(proctrack.MAX_DATAGRAM)
    view = memoryview(buf)

    def recv() -> int:
        size = sock.recv_into(buf)
        events, _bad = proctrack.parse(view[:size])
        return sum(1 for e in events if e.what != proctrack.PROC_EVENT_NONE)

    def close() -> None:
        sock.send(proctrack.subscription(proctrack.PROC_CN_MCAST_IGNORE, port=port, seq=0, ack=2))
        sock.close()

    return Reader("standard library (enricher/proctrack.py)", recv, sock.fileno()), close


def _pyroute2_proc() -> tuple[Reader, Callable[[], None]]:
    from pyroute2.netlink.connector.cn_proc import ProcEventSocket

    sock = ProcEventSocket()
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind()
    sock.control(listen=True)

    def recv() -> int:
        return sum(1 for msg in sock.get() if msg["what"] != 0)

    def close() -> None:
        sock.control(listen=False)
        sock.close()

    return Reader("pyroute2 ProcEventSocket", recv, sock.fileno()), close


def process_events(make: Callable[[], tuple[Reader, Callable[[], None]]], n: int) -> Reading:
    reader, close = make()
    wall = reader.read_during(lambda: subprocess.run(
        ["sh", "-c", STORM.format(n=n)], stdin=subprocess.DEVNULL, check=True, timeout=3600))
    close()
    return Reading(reader.name, reader.events, reader.dropped, reader.cpu, wall, reader.broken)


# --- audit --------------------------------------------------------------------------------------------


def _hand_audit() -> tuple[Reader, Callable[[], None]]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, sources.NETLINK_AUDIT)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind((0, sources.AUDIT_NLGRP_READLOG))
    def recv() -> int:
        messages, _rest = sources.parse_netlink_messages(sock.recv(1 << 16))  # as NetlinkSource reads
        return sum(1 for mtype, _port, _payload in messages if mtype == 1326)

    return Reader("standard library (enricher/sources.py)", recv, sock.fileno()), sock.close


def _pyroute2_audit() -> tuple[Reader, Callable[[], None]]:
    from pyroute2.netlink import nlmsg
    from pyroute2.netlink.nlsocket import Marshal, NetlinkSocket

    class AuditMarshal(Marshal):  # type: ignore[misc]
        msg_map = {1326: nlmsg}

    sock = NetlinkSocket(sources.NETLINK_AUDIT)
    sock.set_marshal(AuditMarshal())
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind(groups=sources.AUDIT_NLGRP_READLOG)

    def recv() -> int:
        count = 0
        for msg in sock.get():
            if msg["header"]["type"] == 1326:
                # the record's text is only in the raw buffer
                bytes(msg.data[msg.offset + 16 : msg.offset + msg["header"]["length"]])
                count += 1
        return count

    return Reader("pyroute2 NetlinkSocket", recv, sock.fileno()), sock.close


def audit_records(make: Callable[[], tuple[Reader, Callable[[], None]]], n: int) -> Reading:
    reader, close = make()
    wall = reader.read_during(lambda: subprocess.run(
        [sys.executable, "-c", AUDIT_STORM, str(n)], input="go\n", capture_output=True, text=True, check=True,
        timeout=3600))
    with contextlib.suppress(OSError):  # a broken pyroute2 socket raises its first error again here
        close()
    return Reading(reader.name, reader.events, reader.dropped, reader.cpu, wall, reader.broken)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: both sockets need it")
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        # Not a dependency of syscribe (it uses the standard library): installed for the comparison only.
        raise SystemExit("pyroute2 is not installed: .venv/bin/pip install pyroute2==0.9.7 to compare") \
            from None
    results: dict[str, list[Reading]] = {"process events": [], "audit": []}
    for make in (_hand_proc, _pyroute2_proc):
        results["process events"].append(process_events(make, args.processes))
        print(results["process events"][-1], flush=True)
    for make in (_hand_audit, _pyroute2_audit):
        results["audit"].append(audit_records(make, args.records))
        print(results["audit"][-1], flush=True)
    print(f"{'':15} {'reader':42} {'events':>8} {'dropped':>8} {'CPU s':>7} {'us/event':>9} {'wall s':>7}")
    for case, readings in results.items():
        for r in readings:
            broken = "  broken: every read after the overrun fails" if r.broken else ""
            print(f"{case:15} {r.reader:42} {r.events:>8} {r.dropped:>8} {r.cpu_seconds:>7.3f} "
                  f"{r.us_per_event:>9.1f} {r.wall_seconds:>7.1f}{broken}")
    if args.json:
        print(json.dumps({case: [asdict(r) for r in rs] for case, rs in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
