"""A slow, obvious EventAssembler: the oracle that feed() and feed_many() are checked against.

It follows the rules of syscribe.enricher.events' docstring as written, with none of the assembler's
shortcuts (no pre-check of a companion's audit id, no cached verdicts, no deferred head checks, no
counters in locals): every line is parsed in full with auditparse.parse_line, and after every line the
head of the queue is looked at. Parsing a record and building an event from a record and its
companions are auditparse's and events.build_event's jobs; what is checked here is the joining,
completing and releasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from syscribe.enricher import auditparse
from syscribe.enricher.auditparse import Record
from syscribe.enricher.events import MAX_COMPANIONS, MAX_PATH_ITEMS, AuditEvent, Namer, build_event


@dataclass
class Group:
    key: tuple[str, str]
    first_now: float
    first_line: int  # the number (from 1) of the line of its first main record
    queued: int = 0
    done: bool = False  # its EOE came
    companions: int = 0
    syscall: Record | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ReferenceAssembler:
    def __init__(self, *, hold_seconds: float, hold_lines: int, max_pending: int, namer: Namer) -> None:
        self.hold_seconds = hold_seconds
        self.hold_lines = hold_lines
        self.max_pending = max_pending
        self.namer = namer
        self.line = 0  # lines fed so far
        self.queue: list[tuple[Record, Group, int]] = []  # (main record, its group, its position)
        self.groups: dict[tuple[str, str], Group] = {}  # the group new records of a key join

    def complete(self, group: Group, now: float) -> bool:
        return (
            group.done
            or now - group.first_now >= self.hold_seconds
            or self.line - group.first_line >= self.hold_lines
        )

    def feed(self, line: bytes, position: int, now: float) -> list[AuditEvent]:
        self.line += 1
        record = auditparse.parse_line(line)
        if record is not None:
            key = record.key
            if record.rtype.role == auditparse.MAIN:
                group = self.groups.get(key)
                if group is None or self.complete(group, now):
                    group = self.groups[key] = Group(key, now, self.line)
                group.queued += 1
                self.queue.append((record, group, position))
            elif key in self.groups:
                self.join(self.groups[key], record)
        return self.release(now)

    def join(self, group: Group, record: Record) -> None:
        number = record.rtype.number
        fields = record.fields
        if number == 1320:  # EOE
            group.done = True
            return
        if group.companions >= MAX_COMPANIONS:
            return
        group.companions += 1
        if number == 1300 and group.syscall is None:
            group.syscall = record
        elif number == 1327 and "proctitle" in fields:
            group.extra.setdefault("proctitle", fields["proctitle"])
        elif number == 1307 and "cwd" in fields:
            group.extra.setdefault("cwd", fields["cwd"])
        elif number == 1309:
            argv = " ".join(value for name, value in fields.items() if auditparse.is_argument(name))
            if argv:
                group.extra.setdefault("argv", argv[: auditparse.MAX_VALUE])
        elif number == 1302:
            item = auditparse.uint(fields.get("item"), MAX_PATH_ITEMS - 1)
            if item is not None and fields.get("name"):
                group.extra.setdefault(f"path{item}", fields["name"])

    def release(self, now: float | None) -> list[AuditEvent]:
        """The events at the head of the queue that may leave: complete at `now`, or too many pending;
        with None (the input ended), all of them."""
        out = []
        while self.queue:
            record, group, _ = self.queue[0]
            if now is not None and not self.complete(group, now) and len(self.queue) <= self.max_pending:
                break
            self.queue.pop(0)
            out.append(build_event(record, group.syscall, group.extra, self.namer))
            group.queued -= 1
            if group.queued == 0 and self.groups.get(group.key) is group:
                del self.groups[group.key]
        return out

    def pending_position(self) -> int | None:
        return self.queue[0][2] if self.queue else None
