"""Audit events from audit records: one AuditEvent per SECCOMP, AVC or AppArmor record, with what its
SYSCALL, PROCTITLE, EXECVE, CWD and PATH companions add. Pure: no I/O, the clock is the caller's `now`.

The records of one syscall share their origin (node) and `audit(time:serial)`: that pair is the key of
a group. The kernel writes the SECCOMP / AVC / AppArmor records while the syscall runs and the SYSCALL,
CWD, PATH, PROCTITLE and EOE records at its exit, so companions come after their main records, never
before; a companion whose group is not pending is not kept (counted as unjoined, or late when its group
has already left). Several main records of one key (two AVC denials in one syscall) are several events
sharing the same companions.

Completion rule. A group is complete when
1. its EOE record arrives (the kernel's end of a multi-record event, in audit.log, kmsg and netlink);
2. its hold is over: `hold_seconds` on the caller's clock since its first record, or `hold_lines`
   further lines fed. The line rule makes a batch run give the same joins whatever the reading speed;
   the clock rule bounds the delay on a quiet live source, where nothing else arrives: the caller calls
   `flush(now)` when idle (`next_deadline()` says when it is worth it). A record with no companions
   (the kernel had no audit context for the task, as on a node without auditd) completes this way;
3. more than `max_pending` events are pending: the oldest is emitted as it is (counted);
4. the input ends: `flush(None)`.

Order and checkpoints. Every main record is an entry of a queue in the order it was fed, and leaves
when its group is complete and every entry before it has left. So `pending_position()`, the position of
the oldest entry still queued, is a checkpoint: every main record before it has been emitted, none at
or after it has, and re-reading from it emits each remaining one once (a companion re-read for a group
already gone finds nothing to join).

Memory is bounded whatever the input: every queued entry came within the last `hold_lines` lines, so
at most `hold_lines` main records are held (and at most `max_pending`), each with at most
auditparse.MAX_BODY bytes of body, and a group joins at most MAX_COMPANIONS companions, each bounded
the same way.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from syscribe.enricher import auditparse
from syscribe.enricher.auditparse import COMPANION, END, MAIN, MAX_VALUE, Record, RecordType

from syscribe import arch as archmod
from syscribe.arch import Arch
from syscribe.syscalls import name_of

Namer = Callable[[Arch, int], "str | None"]

MAX_COMPANIONS = 16
MAX_PATH_ITEMS = 8
# Distinct type tokens counted by name; more (garbage) are counted together.
MAX_TYPE_KEYS = 256
# Keys of events that recently left, to tell a late companion from one that never had an event.
_RECENT = 1024
# Syscall names remembered per assembler.
_NAMES = 4096


@dataclass(frozen=True, slots=True)
class AuditEvent:
    kind: str  # "seccomp" | "selinux" | "apparmor"  (the output's `type`)
    record_type: str  # "SECCOMP", "AVC", "APPARMOR_DENIED", ...
    audit_id: str  # "1613596317.899:6461" (timestamp:serial as in the record)
    timestamp: float  # seconds since the epoch, from audit(...)
    node: str | None  # from a `node=` prefix (or the syslog host when that is all there is)
    pid: int | None  # host pid
    uid: int | None
    auid: int | None
    comm: str | None
    exe: str | None  # hex-encoded values decoded
    arch: Arch | None  # from the record's own arch= (x32 when an x86_64 record has the x32 bit)
    syscall: int | None  # as in the record (x32 numbers keep their 0x40000000 bit)
    syscall_name: str | None  # resolved for `arch`, never for the host's arch
    action: str | None  # seccomp: kill_process, kill_thread, trap, errno, user_notif, trace, log, allow;
    # AVC: "denied"/"granted"; AppArmor: the apparmor= value ("DENIED", "ALLOWED", "AUDIT", ...)
    errno: int | None  # seccomp errno from code= when the action is errno and the record carries it
    # (kernels since 4.14 log the action alone: code=0x50000, errno None)
    details: Mapping[str, str]  # the record's other fields in record order (SELinux: perm, scontext,
    # tcontext, tclass, permissive, name, path...; AppArmor: apparmor, operation, profile, name,
    # requested_mask, denied_mask, fsuid, ouid, target...; seccomp: sig, compat, ip, code, ses...), then
    # from companions: ppid, success, exit, key, tty, ses, subj (SYSCALL), proctitle, cwd, argv (EXECVE),
    # path0..path7 (PATH names)


_AA_ACTIONS = {1501: "AUDIT", 1502: "ALLOWED", 1503: "DENIED", 1504: "HINT", 1505: "STATUS",
               1506: "ERROR", 1507: "KILLED"}
# Fields that become AuditEvent attributes rather than details.
_PROMOTED = frozenset({"pid", "uid", "auid", "comm", "exe", "arch", "syscall", "avc"})
_FROM_SYSCALL = ("ppid", "success", "exit", "key", "tty", "ses", "subj")
_NO_FIELDS: dict[str, str] = {}


def build_event(
    record: Record, syscall: Record | None = None, extra: Mapping[str, str] | None = None,
    namer: Namer = name_of,
) -> AuditEvent:
    """The event of a main record, with its SYSCALL companion and what other companions added."""
    own = record.fields
    # The main record's own fields win; its SYSCALL companion fills what it lacks (an AVC has no arch,
    # syscall, exe or uid of its own).
    fields = own if syscall is None else {**syscall.fields, **own}

    number = record.rtype.number
    errno = None
    if number == 1326:
        kind = "seccomp"
        action, errno = auditparse.seccomp_action(own.get("code"))
    elif number == 1400 and "apparmor" not in own:
        kind = "selinux"
        action = own.get("avc")
    else:
        kind = "apparmor"
        action = own.get("apparmor") or _AA_ACTIONS.get(number)

    nr = auditparse.uint(fields.get("syscall"))
    arch = _arch(fields.get("arch"))
    if arch is archmod.X86_64 and nr is not None and nr & archmod.X32_SYSCALL_BIT:
        arch = archmod.X32  # an x32 task: its record says x86_64, its numbers carry the x32 bit
    name = None
    if arch is not None and nr is not None:
        try:
            name = namer(arch, nr)
        except Exception:  # a namer that fails (no libseccomp) must not lose the event
            name = None

    details = {k: v for k, v in own.items() if k not in _PROMOTED}
    if syscall is not None:
        for key in _FROM_SYSCALL:
            value = syscall.fields.get(key)
            if value is not None and key not in details:
                details[key] = value
    if extra:
        for key, value in extra.items():
            details.setdefault(key, value)

    return AuditEvent(
        kind,
        record.rtype.name,
        record.audit_id,
        record.timestamp,
        record.node or record.host,
        auditparse.uint(fields.get("pid"), 0x7FFFFFFF),
        auditparse.uint(fields.get("uid")),
        auditparse.uint(fields.get("auid")),
        fields.get("comm"),
        fields.get("exe"),
        arch,
        nr,
        name,
        action,
        errno,
        details,
    )


@lru_cache(maxsize=64)
def _arch(value: str | None) -> Arch | None:
    if not value or len(value) > 8 or not auditparse.is_hex(value):
        return None
    return archmod.BY_TOKEN.get(int(value, 16))


@dataclass(slots=True)
class ParseStats:
    """What the assembler saw, for metrics and for the report at exit. Every counter only grows."""

    lines: int = 0  # lines (and netlink messages) fed
    records: int = 0  # of them, those holding a type= token
    non_audit: int = 0  # no record at all
    malformed: int = 0  # a handled type whose header (audit(time:serial)) is broken
    truncated: int = 0  # records longer than auditparse.MAX_BODY, parsed as far as that
    events: int = 0
    companions_joined: int = 0
    companions_unjoined: int = 0  # no pending event to join: their event was not one of ours (or, out
    # of the kernel's order, they came before it); their header is not even parsed
    companions_late: int = 0  # their event had already left: a longer hold would have joined them
    companions_dropped: int = 0  # over MAX_COMPANIONS for one event
    completed_eoe: int = 0
    completed_hold: int = 0
    completed_evicted: int = 0  # more than max_pending events were pending
    completed_flush: int = 0
    namer_errors: int = 0
    type_tokens: dict[bytes, int] = field(default_factory=dict)  # raw type= tokens, bounded

    def count_type(self, token: bytes) -> None:
        self.records += 1
        counts = self.type_tokens
        count = counts.get(token)
        if count is not None:
            counts[token] = count + 1
        else:
            self.count_new_type(token)

    def count_new_type(self, token: bytes) -> None:
        counts = self.type_tokens
        if len(counts) < MAX_TYPE_KEYS:
            counts[token] = 1
        else:
            counts[b"(other)"] = counts.get(b"(other)", 0) + 1

    @property
    def by_type(self) -> dict[str, int]:
        """Records by type name (a kernel number and auditd's name for it count together)."""
        out: dict[str, int] = {}
        for token, count in self.type_tokens.items():
            rtype = auditparse.record_type(token)
            name = rtype.name if rtype is not None else token.decode("ascii", "backslashreplace")
            out[name] = out.get(name, 0) + count
        return out

    @property
    def unhandled(self) -> dict[str, int]:
        """Records of types the enricher does not use, by type."""
        return {k: v for k, v in self.by_type.items() if k not in auditparse.BY_NAME}

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "type_tokens"
        }
        out["by_type"] = self.by_type
        out["unhandled"] = self.unhandled
        return out


class _Group:
    """What the records sharing one key (origin, audit id) have in common: companions, completion.

    Each main record of the key is its own queue entry; they all take their companions from here.
    """

    __slots__ = ("companions", "done", "extra", "first_line", "first_now", "key", "queued", "syscall")

    def __init__(self, key: tuple[str, str], now: float, line: int) -> None:
        self.key = key
        self.first_now = now
        self.first_line = line
        self.queued = 0  # entries of this group not yet emitted
        self.syscall: Record | None = None
        self.extra: dict[str, str] = {}
        self.companions = 0
        self.done = False

    def join(self, record: Record) -> bool:
        """Take what an event needs from a companion; False when the group has had enough."""
        if self.companions >= MAX_COMPANIONS:
            return False
        self.companions += 1
        number = record.rtype.number
        fields = record.fields
        extra = self.extra
        if number == 1300:
            if self.syscall is None:
                self.syscall = record
        elif number == 1327:
            if "proctitle" in fields:
                extra.setdefault("proctitle", fields["proctitle"])
        elif number == 1307:
            if "cwd" in fields:
                extra.setdefault("cwd", fields["cwd"])
        elif number == 1309:
            argv = " ".join(v for k, v in fields.items() if auditparse.is_argument(k))
            if argv:
                extra.setdefault("argv", argv[:MAX_VALUE])
        elif number == 1302:
            item = auditparse.uint(fields.get("item"), MAX_PATH_ITEMS - 1)
            name = fields.get("name")
            if item is not None and name:
                extra.setdefault(f"path{item}", name)
        return True


class EventAssembler:
    """Feed records in file order; get events back in the order their first record was fed.

    See the module docstring for when an event is complete. `position` is whatever the caller uses to
    find a line again (an offset, an (inode, offset) pair); it is only handed back by
    pending_position(). `now` is the caller's clock: time.monotonic() when following a live source; a
    constant in a batch run, so that joins depend on the lines alone.

    Every main record is an entry of the queue, in the order it was fed, and leaves when the group of
    its key (origin, audit id) is complete and every entry before it has left. So a second main record
    of an audit id that comes after another event's first record waits in its own place: re-reading
    from pending_position() never brings back a main record that has already left.

    The hot path is written for a million-line audit.log: a line is rejected after two C-level scans
    and a dict lookup unless its type is handled; a companion (the bulk of a busy log) is parsed only
    when the audit id in its header names a pending group.
    """

    def __init__(
        self, *, hold_seconds: float = 0.25, max_pending: int = 10_000, namer: Namer = name_of,
        hold_lines: int = 1000,
    ) -> None:
        if not hold_seconds >= 0:
            raise ValueError(f"hold_seconds must be >= 0, not {hold_seconds!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, not {max_pending!r}")
        if hold_lines < 1:
            raise ValueError(f"hold_lines must be >= 1, not {hold_lines!r}")
        self.stats = ParseStats()
        self._hold_seconds = hold_seconds
        self._hold_lines = hold_lines
        self._max_pending = max_pending
        self._namer = namer
        self._queue: deque[tuple[Record, _Group, object]] = deque()  # (main record, group, position)
        self._groups: dict[tuple[str, str], _Group] = {}  # the group that new records of a key join
        # Audit ids (the header's bytes) of the groups above, with how many origins hold each, and of
        # groups that recently left: the companion pre-check.
        self._ids: dict[bytes, int] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._names: dict[tuple[int, int], str | None] = {}
        self._line = 0

    def feed(self, line: bytes, position: object, now: float) -> list[AuditEvent]:
        """One line of a log (its end of line may be there or not)."""
        stats = self.stats
        stats.lines += 1
        self._line += 1
        at = line.find(b"type=")
        if at < 0:
            stats.non_audit += 1
        else:
            start = at + 5
            end = line.find(b" ", start, start + auditparse.MAX_TYPE_TOKEN + 1)
            if end < 0:
                end = min(len(line), start + auditparse.MAX_TYPE_TOKEN + 1)
            token = line[start:end]
            if token[-1:] in (b"\n", b"\r"):
                token = token.rstrip(b"\r\n")
            # ParseStats.count_type, inlined: this runs for every record of a busy log.
            stats.records += 1
            counts = stats.type_tokens
            count = counts.get(token)
            if count is not None:
                counts[token] = count + 1
            else:
                stats.count_new_type(token)
            rtype = auditparse.BY_TOKEN.get(token)
            if rtype is None and token[:8] == b"UNKNOWN[":
                rtype = auditparse.record_type(token)
            if rtype is not None and (rtype.role == MAIN or self._known_id(line, end)):
                self._take(rtype, line, at, end, position=position, now=now)
        queue = self._queue
        if queue:
            group = queue[0][1]
            if (
                group.done
                or now - group.first_now >= self._hold_seconds
                or self._line - group.first_line >= self._hold_lines
                or len(queue) > self._max_pending
            ):
                return self._drain(now)
        return []

    def feed_netlink(
        self, type_number: int, payload: bytes, position: object, now: float
    ) -> list[AuditEvent]:
        """One message from the audit netlink socket: its header's type, its payload."""
        stats = self.stats
        stats.lines += 1
        self._line += 1
        stats.count_type(str(type_number).encode())
        rtype = auditparse.BY_NUMBER.get(type_number)
        if rtype is not None and (rtype.role == MAIN or self._known_id(payload, 0)):
            self._take(rtype, payload, 0, 0, position=position, now=now)
        return self._drain(now) if self._queue else []

    def flush(self, now: float | None = None) -> list[AuditEvent]:
        """Events whose hold is over at `now`; with None (end of input), every pending event."""
        if now is not None:
            return self._drain(now) if self._queue else []
        out: list[AuditEvent] = []
        while self._queue:
            if self._queue[0][1].done:
                self.stats.completed_eoe += 1
            else:
                self.stats.completed_flush += 1
            self._emit_head(out)
        return out

    def pending_position(self) -> object | None:
        """The position of the oldest main record not yet emitted (a safe restart point), or None."""
        return self._queue[0][2] if self._queue else None

    def next_deadline(self) -> float | None:
        """When (on the caller's clock) flush(now) would release the oldest pending event by its hold."""
        if not self._queue:
            return None
        group = self._queue[0][1]
        return group.first_now if group.done else group.first_now + self._hold_seconds

    @property
    def pending(self) -> int:
        """Events not yet emitted."""
        return len(self._queue)

    def _known_id(self, buf: bytes, header_at: int) -> bool:
        """Whether a companion's audit id names a pending group (else it is counted and dropped)."""
        if not self._ids and not self._recent:
            self.stats.companions_unjoined += 1
            return False
        open_at = buf.find(b"(", header_at, header_at + auditparse.MAX_TYPE_TOKEN)
        close = buf.find(b")", open_at + 1, open_at + 41) if open_at >= 0 else -1
        ident = buf[open_at + 1 : close] if close >= 0 else b""
        if ident in self._ids:
            return True
        if ident in self._recent:
            self.stats.companions_late += 1
        else:
            self.stats.companions_unjoined += 1
        return False

    def _complete(self, group: _Group, now: float) -> bool:
        return (
            group.done
            or now - group.first_now >= self._hold_seconds
            or self._line - group.first_line >= self._hold_lines
        )

    def _take(
        self, rtype: RecordType, buf: bytes, type_at: int, header_at: int, *, position: object, now: float
    ) -> None:
        stats = self.stats
        header = auditparse.parse_header(buf, header_at)
        if header is None:
            stats.malformed += 1
            return
        audit_id, timestamp, body_at = header
        if type_at:
            node, host = auditparse.envelope(buf[max(0, type_at - auditparse.MAX_PREFIX) : type_at])
        else:
            node = host = None
        key = (node or host or "", audit_id)
        group = self._groups.get(key)
        role = rtype.role
        if role == MAIN:
            record = auditparse.record_from(
                rtype, buf, body_at, audit_id=audit_id, timestamp=timestamp, node=node, host=host
            )
            if record.truncated:
                stats.truncated += 1
            if group is None or self._complete(group, now):
                # A new event; a complete group of the same key (a reused id) keeps its own entries.
                if group is None:
                    ident = audit_id.encode()
                    self._ids[ident] = self._ids.get(ident, 0) + 1
                group = self._groups[key] = _Group(key, now, self._line)
            group.queued += 1
            self._queue.append((record, group, position))
            return
        if group is None:
            # The same audit id pending from another origin: not ours.
            stats.companions_unjoined += 1
            return
        if role == END:
            group.done = True
            return
        assert role == COMPANION
        record = auditparse.record_from(
            rtype, buf, body_at, audit_id=audit_id, timestamp=timestamp, node=node, host=host
        )
        if group.join(record):
            stats.companions_joined += 1
        else:
            stats.companions_dropped += 1

    def _drain(self, now: float) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        queue = self._queue
        stats = self.stats
        while queue:
            group = queue[0][1]
            if group.done:
                stats.completed_eoe += 1
            elif (
                now - group.first_now >= self._hold_seconds
                or self._line - group.first_line >= self._hold_lines
            ):
                stats.completed_hold += 1
            elif len(queue) > self._max_pending:
                stats.completed_evicted += 1
            else:
                break
            self._emit_head(out)
        return out

    def _emit_head(self, out: list[AuditEvent]) -> None:
        record, group, _ = self._queue.popleft()
        out.append(build_event(record, group.syscall, group.extra, self._name))
        self.stats.events += 1
        group.queued -= 1
        if group.queued == 0 and self._groups.get(group.key) is group:
            # Its last entry left: later companions of this key are late, not joined.
            del self._groups[group.key]
            ident = group.key[1].encode()
            count = self._ids[ident] - 1
            if count:
                self._ids[ident] = count
            else:
                del self._ids[ident]
            recent = self._recent
            recent[ident] = None
            if len(recent) > _RECENT:
                recent.popitem(last=False)

    def _name(self, arch: Arch, number: int) -> str | None:
        # Keyed by plain ints: hashing an Arch (a dataclass) on every event costs more than the lookup.
        key = (arch.token, number)
        try:
            return self._names[key]
        except KeyError:
            pass
        try:
            name = self._namer(arch, number)
        except Exception:  # counted, and the event keeps its number
            self.stats.namer_errors += 1
            return None
        if len(self._names) >= _NAMES:
            self._names.clear()  # hostile numbers must not grow it without bound
        self._names[key] = name
        return name


