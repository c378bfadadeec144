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

With `seccomp_alone` (the pipeline's setting), a SECCOMP record in the kernel's own format, fed while
no event is queued, is an event at once, from the record alone: its enriched line takes nothing from
companions (every field it shows is the record's own, and those win over a SYSCALL's). Its companions,
if any come, are not joined (counted as unjoined); order is kept because nothing waits ahead of it.

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

import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from syscribe import arch as archmod
from syscribe.arch import Arch
from syscribe.enricher import auditparse
from syscribe.enricher.auditparse import COMPANION, END, MAIN, MAX_VALUE, Record, RecordType
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
# feed()'s position stands for "the line's number from feed_many()'s first".
_SEQ = object()
_NEVER = 1 << 62
_EOL = (b"\n", b"\r")
# How far past `type=` the token's end is looked for (find_type's window).
_TOKEN_SPAN = auditparse.MAX_TYPE_TOKEN + 1
_BY_TOKEN = auditparse.BY_TOKEN
_HEADER_MATCH = auditparse.HEADER.match
_NO_ORIGIN: tuple[None, None] = (None, None)
# What a companion's audit id names: a pending group, one that recently left, neither.
_PENDING, _LATE, _UNKNOWN = 2, 1, 0
_record = auditparse.record_at
_SECCOMP_TYPE = auditparse.BY_NAME["SECCOMP"]
# A SECCOMP record as the kernel writes it (audit_seccomp(), since 4.14), header and body, up to the end
# of the line or auditd's interpretation (0x1D), matched on the text the general way decodes: where it
# matches, auditparse's general way (HEADER, then _SECCOMP on the body) reads the same fields.
_SECCOMP_LINE = re.compile(
    r" {0,16}(?:msg=)?audit\(((\d{1,12}\.\d{1,9}):\d{1,10})\): ?"
    r"auid=(\d+) uid=(\d+) gid=(\d+) ses=(\d+)(?: subj=([^ ]*(?: [^ =]+)*))? pid=(\d+)"
    r' comm=(?:"([^"]*)"|([0-9A-F]+)|\(null\)) exe=(?:"([^"]*)"|([0-9A-F]+)|\(null\))'
    r" sig=(\d+) arch=([0-9a-f]{1,8}) syscall=(\d+) compat=(\d+) ip=(0x[0-9a-f]+) code=(0x[0-9a-f]{1,8})"
    r"[\r\n\x00]*\Z",
    re.ASCII,  # \d is 0-9 only
).match
_MAX_BODY = auditparse.MAX_BODY


class AuditEvent(NamedTuple):
    # A named tuple rather than a frozen dataclass: one is made for every event, and a tuple is built
    # five times faster.
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


Identify = Callable[["str | None", "str | None"], "tuple[Arch | None, int | None, str | None]"]


def build_event(
    record: Record, syscall: Record | None = None, extra: Mapping[str, str] | None = None,
    namer: Namer = name_of,
) -> AuditEvent:
    """The event of a main record, with its SYSCALL companion and what other companions added."""

    def identify(arch_text: str | None, nr_text: str | None) -> tuple[Arch | None, int | None, str | None]:
        arch, nr = syscall_identity(arch_text, nr_text)
        name = None
        if arch is not None and nr is not None:
            try:
                name = namer(arch, nr)
            except Exception:  # a namer that fails (no libseccomp) must not lose the event
                name = None
        return arch, nr, name

    return _event(record, syscall, extra, identify)


def syscall_identity(arch_text: str | None, nr_text: str | None) -> tuple[Arch | None, int | None]:
    """The architecture and syscall number of a record's arch= and syscall= fields."""
    nr = _uint(nr_text)
    arch = _arch(arch_text)
    if arch is _X86_64 and nr is not None and nr & _X32_BIT:
        arch = archmod.X32  # an x32 task: its record says x86_64, its numbers carry the x32 bit
    return arch, nr


def _event(
    record: Record, syscall: Record | None, extra: Mapping[str, str] | None, identify: Identify
) -> AuditEvent:
    own = record.fields
    # The main record's own fields win; its SYSCALL companion fills what it lacks (an AVC has no arch,
    # syscall, exe or uid of its own).
    fields = own if syscall is None else {**syscall.fields, **own}

    rtype = record.rtype
    number = rtype.number
    errno = None
    if number == 1326:
        kind = "seccomp"
        action, errno = _seccomp_action(own.get("code"))
    elif number == 1400 and "apparmor" not in own:
        kind = "selinux"
        action = own.get("avc")
    else:
        kind = "apparmor"
        action = own.get("apparmor") or _AA_ACTIONS.get(number)

    arch, nr, name = identify(fields.get("arch"), fields.get("syscall"))

    details = {k: v for k, v in own.items() if k not in _PROMOTED}
    if syscall is not None:
        for key in _FROM_SYSCALL:
            value = syscall.fields.get(key)
            if value is not None and key not in details:
                details[key] = value
    if extra:
        for key, value in extra.items():
            details.setdefault(key, value)

    pid = _uint(fields.get("pid"))
    return AuditEvent(
        kind,
        rtype.name,
        record.audit_id,
        record.timestamp,
        record.node or record.host,
        pid if pid is None or pid <= 0x7FFFFFFF else None,
        _uint(fields.get("uid")),
        _uint(fields.get("auid")),
        fields.get("comm"),
        fields.get("exe"),
        arch,
        nr,
        name,
        action,
        errno,
        details,
    )


_uint = auditparse.uint
_seccomp_action = auditparse.seccomp_action
_unhex = auditparse.unhex
_X86_64 = archmod.X86_64
_X32_BIT = archmod.X32_SYSCALL_BIT


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
    completed_alone: int = 0  # SECCOMP records written at once, without waiting for companions
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

    def count_fed(
        self, lines: int, records: int, non_audit: int, unjoined: int, late: int, alone: int
    ) -> None:
        """What one feed_many() call counted in locals."""
        self.lines += lines
        self.records += records
        self.non_audit += non_audit
        self.companions_unjoined += unjoined
        self.companions_late += late
        self.events += alone
        self.completed_alone += alone

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

    __slots__ = (
        "companions", "done", "extra", "first_line", "first_now", "ident", "key", "queued", "syscall"
    )

    def __init__(self, key: tuple[str, str], ident: bytes, now: float, line: int) -> None:
        self.key = key
        self.ident = ident  # the audit id as the header has it (key[1] in bytes)
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

    The hot path is written for a million-line audit.log: feed_many() takes a batch of lines in one
    call; a line is rejected after two C-level scans and a dict lookup unless its type is handled; a
    companion (the bulk of a busy log) is parsed only when the audit id in its header names a pending
    group; events are tuples, their syscall names and numbers come from a cache keyed by the fields'
    text.
    """

    def __init__(
        self, *, hold_seconds: float = 0.25, max_pending: int = 10_000, namer: Namer = name_of,
        hold_lines: int = 1000, seccomp_alone: bool = False,
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
        self._mains: list[tuple[str | None, str]] | None = None  # feed_many()'s `mains`, while it runs
        # (arch=, syscall= as written) -> what syscall_identity() and the namer make of them
        self._syscalls: dict[tuple[str | None, str | None], tuple[Arch | None, int | None, str | None]] = {}
        self._identify = self._cached_identity  # one bound method, not one per event
        self._alone = seccomp_alone

    def feed(self, line: bytes, position: object, now: float) -> list[AuditEvent]:
        """One line of a log (its end of line may be there or not)."""
        released = self._feed((line,), 0, now, position, None)
        return released[0][1] if released else []

    def feed_many(
        self, lines: Sequence[bytes], first: int, now: float, *,
        mains: list[tuple[str | None, str]] | None = None,
    ) -> list[tuple[int, list[AuditEvent]]]:
        """Lines in file order, all at the caller's time `now`; line i's position is `first + i`.

        The same as feed() on each line in turn (the same events, joins and counts), for a fraction of
        the cost per line: what feed() returned is here as (position of the line whose feeding released
        them, events), in order. When `mains` is a list, (pid field, audit id) of each main record taken
        is appended to it, so that the caller can look its process up at once.
        """
        return self._feed(lines, first, now, _SEQ, mains)

    def _feed(
        self, lines: Sequence[bytes], first: int, now: float, position: object,
        mains: list[tuple[str | None, str]] | None,
    ) -> list[tuple[int, list[AuditEvent]]]:
        # The loop every line of a busy log goes through: counters are locals, a line that holds no
        # handled record costs two finds, a slice and two dict lookups, and the queue head is looked at
        # only when it can have become complete. After a look, the head is not done, not over its hold
        # and the queue is not over max_pending; until the clock moves (the next call) only these make
        # it due: its line hold ends (check_at), a companion of a pending group arrives (an EOE), a
        # main record makes a new head or too many pending; and it leaves only through _drain, which
        # looks at the next head itself. What is not done for every line is in methods (_seccomp_alone,
        # _companion_head, _head_due, ParseStats.count_fed); the per-line part stays here, where a call
        # per line would cost about 0.1 µs of the 1.5 µs a line of the audit-rules mix takes.
        stats = self.stats
        counts = stats.type_tokens
        count_of = counts.get
        rtype_of = _BY_TOKEN.get
        ids = self._ids
        recent = self._recent
        queue = self._queue
        take_main = self._take_main
        take_companion = self._take_companion
        hold_lines = self._hold_lines
        max_pending = self._max_pending
        released: list[tuple[int, list[AuditEvent]]] = []
        base = self._line
        n = base
        # The clock moved since the last call: the head may be due by time after this call's first line.
        check_at = base + 1 if queue else _NEVER
        non_audit = records = unjoined = late = alone_count = 0
        alone = self._alone
        last_head = b""  # the header (up to its audit id) of the last companion looked at
        last_verdict = _UNKNOWN
        self._mains = mains
        try:
            for line in lines:
                n += 1
                at = line.find(b"type=")
                if at < 0:
                    non_audit += 1
                else:
                    start = at + 5
                    end = line.find(b" ", start, start + _TOKEN_SPAN)
                    if end < 0:
                        end = min(len(line), start + _TOKEN_SPAN)
                    token = line[start:end]
                    if token[-1:] in _EOL:
                        token = token.rstrip(b"\r\n")
                    records += 1
                    count = count_of(token)
                    if count is not None:
                        counts[token] = count + 1
                    else:
                        stats.count_new_type(token)
                    rtype = rtype_of(token)
                    if rtype is None and token[:8] == b"UNKNOWN[":
                        rtype = auditparse.record_type(token)
                    if rtype is not None:
                        if rtype.role == MAIN:
                            self._line = n
                            if alone and rtype is _SECCOMP_TYPE and not queue:
                                # Nothing waits ahead of it, so written now it keeps its place.
                                event = self._seccomp_alone(line, at, end)
                                if event is not None:
                                    released.append((first + n - base - 1, [event]))
                                    alone_count += 1
                                    continue
                            here = first + n - base - 1 if position is _SEQ else position
                            take_main(rtype, line, at, end, here, now)
                            last_head = b""
                            if len(queue) == 1 or len(queue) > max_pending:
                                check_at = n
                        elif ids or recent:
                            # A companion is parsed only when its audit id names a pending group. The
                            # records of one event come together, so the verdict on the previous one's
                            # header stands for a line that starts the same, until ids or recent change.
                            if last_head and line.startswith(last_head, end):
                                verdict = last_verdict
                            else:
                                last_head, verdict = self._companion_head(line, end)
                                last_verdict = verdict
                            if verdict == _PENDING:
                                self._line = n
                                take_companion(rtype, line, at, end)
                                check_at = n
                            elif verdict == _LATE:
                                late += 1
                            else:
                                unjoined += 1
                        else:
                            unjoined += 1
                if n >= check_at:
                    if queue and self._head_due(now, n):
                        self._line = n
                        released.append((first + n - base - 1, self._drain(now)))
                        last_head = b""
                    check_at = queue[0][1].first_line + hold_lines if queue else _NEVER
        finally:
            self._line = n
            self._mains = None
            stats.count_fed(n - base, records, non_audit, unjoined, late, alone_count)
        return released

    def _companion_head(self, line: bytes, end: int) -> tuple[bytes, int]:
        """A companion's header up to its audit id, and what that id names: a pending group, one that
        recently left, neither. Called once per run of lines starting the same (an event's companions)."""
        open_at = line.find(b"(", end, end + auditparse.MAX_TYPE_TOKEN)
        close = line.find(b")", open_at + 1, open_at + 41) if open_at >= 0 else -1
        ident = line[open_at + 1 : close] if close >= 0 else b""
        verdict = _PENDING if ident in self._ids else _LATE if ident in self._recent else _UNKNOWN
        return (line[end : close + 1] if close >= 0 else b""), verdict

    def _head_due(self, now: float, line: int) -> bool:
        """Whether the queue's head may leave at `line`: done, over its hold, or too many wait."""
        group = self._queue[0][1]
        return (
            group.done
            or now - group.first_now >= self._hold_seconds
            or line - group.first_line >= self._hold_lines
            or len(self._queue) > self._max_pending
        )

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
            self._take(rtype, payload, 0, 0, position, now)
        return self._drain(now) if self._queue else []

    def feed_netlink_many(
        self, types: Sequence[int], payloads: Sequence[bytes], first: int, now: float, *,
        mains: list[tuple[str | None, str]] | None = None,
    ) -> list[tuple[int, list[AuditEvent]]]:
        """feed_netlink() on each message (message i at position `first + i`), returned as feed_many()
        does."""
        released: list[tuple[int, list[AuditEvent]]] = []
        self._mains = mains
        try:
            for i, (type_number, payload) in enumerate(zip(types, payloads, strict=True)):
                events = self.feed_netlink(type_number, payload, first + i, now)
                if events:
                    released.append((first + i, events))
        finally:
            self._mains = None
        return released

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
        verdict = self._companion_head(buf, header_at)[1]
        if verdict == _PENDING:
            return True
        if verdict == _LATE:
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
        self, rtype: RecordType, buf: bytes, type_at: int, header_at: int, position: object, now: float
    ) -> None:
        if rtype.role == MAIN:
            self._take_main(rtype, buf, type_at, header_at, position, now)
        else:
            self._take_companion(rtype, buf, type_at, header_at)

    def _origin(self, buf: bytes, type_at: int) -> tuple[str | None, str | None]:
        return auditparse.envelope(buf[max(0, type_at - auditparse.MAX_PREFIX) : type_at])

    def _take_main(
        self, rtype: RecordType, buf: bytes, type_at: int, header_at: int, position: object, now: float
    ) -> None:
        header = _HEADER_MATCH(buf, header_at)
        if header is None:
            self.stats.malformed += 1
            return
        ident = header[1]
        audit_id = ident.decode("ascii")
        node, host = self._origin(buf, type_at) if type_at else _NO_ORIGIN
        record = _record(rtype, buf, header.end(), audit_id, float(header[2]), node, host)
        if record.truncated:
            self.stats.truncated += 1
        if self._mains is not None:
            self._mains.append((record.fields.get("pid"), audit_id))
        key = (node or host or "", audit_id)
        groups = self._groups
        group = groups.get(key)
        if group is None or self._complete(group, now):
            # A new event; a complete group of the same key (a reused id) keeps its own entries.
            if group is None:
                ids = self._ids
                ids[ident] = ids.get(ident, 0) + 1
            group = groups[key] = _Group(key, ident, now, self._line)
        group.queued += 1
        self._queue.append((record, group, position))

    def _seccomp_alone(self, line: bytes, type_at: int, token_end: int) -> AuditEvent | None:
        """The event of a SECCOMP record in the kernel's own format, from the record alone; None when
        the line is anything else (the general way takes it then).

        Its line takes nothing from companions: the record has every field the line shows (pid, uid,
        auid, comm, exe, arch, syscall), and those win over a SYSCALL companion's. So it need not wait
        for them; companions that come after it are not joined (counted as unjoined).
        """
        node = host = None
        if type_at:
            node, host = self._origin(line, type_at)
            if host is not None:
                return None  # through syslog the 0x1D may come as `#035`: the general way knows
        separator = line.find(b"\x1d", token_end)
        text = (line[token_end:separator] if separator >= 0 else line[token_end:]).decode(
            "utf-8", "backslashreplace")
        match = _SECCOMP_LINE(text)
        if match is None:
            return None
        (audit_id, stamp, auid, uid, gid, ses, subj, pid, comm, comm_hex, exe, exe_hex, sig, arch, nr, compat,
         ip, code) = match.groups()
        if (comm is None and comm_hex is None) or (exe is None and exe_hex is None):
            return None  # (null): a SYSCALL companion could tell
        if len(text) - match.start(3) + 5 >= _MAX_BODY:
            return None  # a body (from `auid=`) the general way would cut
        action, errno = _seccomp_action(code)
        arch_id, nr_id, name = self._identify(arch, nr)
        details = {"gid": gid, "ses": ses}
        if subj is not None and subj != "?":
            details["subj"] = subj
        details["sig"] = sig
        details["compat"] = compat
        details["ip"] = ip
        details["code"] = code
        if self._mains is not None:
            self._mains.append((pid, audit_id))
        # \d+ of at most 10 digits, as auditparse.uint() takes them: pid within a pid_t, ids within u32
        pid_number = int(pid) if len(pid) <= 10 else None
        uid_number = int(uid) if len(uid) <= 10 else None
        auid_number = int(auid) if len(auid) <= 10 else None
        return AuditEvent(
            "seccomp",
            "SECCOMP",
            audit_id,
            float(stamp),
            node,
            pid_number if pid_number is not None and pid_number <= 0x7FFFFFFF else None,
            uid_number if uid_number is not None and uid_number <= 0xFFFFFFFF else None,
            auid_number if auid_number is not None and auid_number <= 0xFFFFFFFF else None,
            comm if comm is not None else _unhex(comm_hex),
            exe if exe is not None else _unhex(exe_hex),
            arch_id,
            nr_id,
            name,
            action,
            errno,
            details,
        )

    def _take_companion(self, rtype: RecordType, buf: bytes, type_at: int, header_at: int) -> None:
        stats = self.stats
        header = _HEADER_MATCH(buf, header_at)
        if header is None:
            stats.malformed += 1
            return
        audit_id = header[1].decode("ascii")
        node, host = self._origin(buf, type_at) if type_at else _NO_ORIGIN
        group = self._groups.get((node or host or "", audit_id))
        if group is None:
            # The same audit id pending from another origin: not ours.
            stats.companions_unjoined += 1
            return
        if rtype.role == END:
            group.done = True
            return
        assert rtype.role == COMPANION
        record = _record(rtype, buf, header.end(), audit_id, float(header[2]), node, host)
        if group.join(record):
            stats.companions_joined += 1
        else:
            stats.companions_dropped += 1

    def _drain(self, now: float) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        queue = self._queue
        stats = self.stats
        hold_seconds = self._hold_seconds
        hold_lines = self._hold_lines
        line = self._line
        groups = self._groups
        identify = self._identify
        try:
            while queue:
                record, group, _ = queue[0]
                if group.done:
                    stats.completed_eoe += 1
                elif now - group.first_now >= hold_seconds or line - group.first_line >= hold_lines:
                    stats.completed_hold += 1
                elif len(queue) > self._max_pending:
                    stats.completed_evicted += 1
                else:
                    break
                queue.popleft()
                out.append(_event(record, group.syscall, group.extra, identify))
                group.queued -= 1
                if group.queued == 0 and groups.get(group.key) is group:
                    self._forget(group)
        finally:
            stats.events += len(out)
        return out

    def _emit_head(self, out: list[AuditEvent]) -> None:
        record, group, _ = self._queue.popleft()
        out.append(_event(record, group.syscall, group.extra, self._identify))
        self.stats.events += 1
        group.queued -= 1
        if group.queued == 0 and self._groups.get(group.key) is group:
            self._forget(group)

    def _forget(self, group: _Group) -> None:
        """The group's last entry left: later companions of its key are late, not joined."""
        del self._groups[group.key]
        ids = self._ids
        ident = group.ident
        count = ids[ident] - 1
        if count:
            ids[ident] = count
        else:
            del ids[ident]
        recent = self._recent
        recent[ident] = None
        if len(recent) > _RECENT:
            recent.popitem(last=False)

    def _cached_identity(
        self, arch_text: str | None, nr_text: str | None
    ) -> tuple[Arch | None, int | None, str | None]:
        key = (arch_text, nr_text)
        found = self._syscalls.get(key)
        if found is not None:
            return found
        arch, nr = syscall_identity(arch_text, nr_text)
        errors = self.stats.namer_errors
        name = self._name(arch, nr) if arch is not None and nr is not None else None
        found = (arch, nr, name)
        if self.stats.namer_errors == errors:  # a failed lookup is tried (and counted) again
            if len(self._syscalls) >= _NAMES:
                self._syscalls.clear()  # hostile numbers must not grow it without bound
            self._syscalls[key] = found
        return found

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


