"""Netlink framing, the one place both of the enricher's netlink readers take it from: the audit multicast
group (sources.py) and the process events connector (proctrack.py). Pure: bytes in, numbers out.

A datagram holds netlink messages back to back (linux/netlink.h): a 16-byte header (length, type,
flags, sequence, sender's port id) and a payload, each message padded to 4 bytes. A message is read
only within its own stated length; one whose length is shorter than its header or longer than what is
left ends the walk (what follows it cannot be framed).

The readers use the standard library's socket and struct, not pyroute2: see docs/enricher.md ("Why
netlink uses the standard library") for what was measured.
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid (the sender's port id)
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
SO_RCVBUFFORCE = 33  # linux/socket.h; the socket module does not export it


class Message:
    """Where one message lies in its datagram. Plain slots: one is made per message of every read."""

    __slots__ = ("end", "flags", "port", "seq", "start", "type")

    def __init__(self, mtype: int, flags: int, seq: int, port: int, start: int, end: int) -> None:
        self.type = mtype
        self.flags = flags
        self.seq = seq
        self.port = port
        self.start = start  # the payload's first byte
        self.end = end  # one past the payload's last byte (the message's stated end)


def walk(data: bytes | bytearray | memoryview) -> tuple[list[Message], int]:
    """The messages of one datagram, and how many bytes at its end did not form one (a broken header:
    at least HEADER.size; fewer: a short tail)."""
    messages: list[Message] = []
    offset, size = 0, len(data)
    unpack = HEADER.unpack_from
    while size - offset >= HEADER.size:
        length, mtype, flags, seq, port = unpack(data, offset)
        if length < HEADER.size or length > size - offset:
            break
        messages.append(Message(mtype, flags, seq, port, offset + HEADER.size, offset + length))
        offset = (offset + length + 3) & ~3  # NLMSG_ALIGN
    return messages, max(0, size - offset)


def header(length: int, mtype: int, flags: int, seq: int, port: int) -> bytes:
    """A message header for a payload of `length` bytes (the header's own size is added)."""
    return HEADER.pack(HEADER.size + length, mtype, flags, seq, port)


def join(sock: socket.socket, group: int, rcvbuf: int) -> None:
    """Bind a netlink socket to multicast `group` with a receive buffer of `rcvbuf` bytes: a bigger
    queue rides out bursts; FORCE passes net.core.rmem_max where we have CAP_NET_ADMIN, else the plain
    option takes what the limit allows. Raises OSError as bind does (the caller says what it means)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((0, group))
