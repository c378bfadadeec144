"""The enricher's loop: source lines -> EventAssembler -> ContainerResolver -> filtered output lines,
with a checkpoint that never runs ahead of what reached the output.

Order and exactly-once, the rules this module keeps:
- Lines get a sequence number as they are read (`seq`); the assembler is given that number as the
  line's position, so `pending_position()` says the earliest line an unreleased event needs.
- Events are written in the order the assembler releases them. One whose process is still being set
  up (Lookup.settled False) waits at the head of a backlog and is asked about again until
  `backlog_seconds` have passed; then it is written with what is known. A process already gone is
  written with what is known, never dropped.
- Every event carries a lower bound of the seq of its first line (the assembler's pending position
  when its batch began) and the seq of the line whose feeding released it (all its lines are at or
  before that one). The checkpoint's resume point R is the least of: the assembler's pending
  position, the lower bound of the first event in the backlog, the lower bound of the first line not
  yet flushed; or, with nothing held, the end of what was read.
- Events already written whose lines may lie at or after R go into the checkpoint with how far past R
  (in lines) their lines end; after a restart they are skipped once, then forgotten.
- The checkpoint also holds the output's length; lines written after it by a run that was killed
  before its next checkpoint are cut off at restart and written again (output.OutputWriter.roll_back).
So a kill -9 at any point loses nothing and writes nothing twice (to a file; stdout cannot be rolled
back, so there the last batch before a kill may be repeated).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from syscribe.enricher import checkpoint as cpmod
from syscribe.enricher import enrichedline
from syscribe.enricher.allocator import keep_freed_heap
from syscribe.enricher.auditparse import uint
from syscribe.enricher.checkpoint import Checkpoint, SourceMark
from syscribe.enricher.containers import ContainerInfo, Lookup
from syscribe.enricher.enrichedline import Filter
from syscribe.enricher.events import AuditEvent, EventAssembler
from syscribe.enricher.metrics import Metrics
from syscribe.enricher.output import OutputClosedError, OutputMismatchError, OutputWriter
from syscribe.enricher.reporter import Reporter
from syscribe.enricher.sources import Batch, Source, SourceError

# A warm lookup's answer stands in for the lookup at release time for this long (the same question:
# that pid, at that record's time).
_WARM_TTL = 30.0
_WARM_MAX = 100_000
_WARM_RECENT = 60.0
_STAMP = re.compile(rb"audit\((\d{1,12})\.\d{1,9}:")
# Lines fed to the assembler in one call.
_SLICE = 4096
_NOT_A_PROCESS = Lookup(None, True)
_build_record = enrichedline.build_record
_encode = enrichedline.encode


class Resolver(Protocol):
    def lookup(self, pid: int, at: float | None = None) -> Lookup: ...


@dataclass(slots=True)
class Stats:
    lines: int = 0
    events: int = 0
    written: int = 0
    filtered: int = 0
    duplicates: int = 0
    unsettled_timeouts: int = 0
    resolver_errors: int = 0
    checkpoints: int = 0
    problems: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Held:
    event: AuditEvent
    lower: int
    emit: int
    lookup: Lookup
    deadline: float


@dataclass(slots=True)
class Settings:
    node: str
    backlog_seconds: float = 2.0
    checkpoint_interval: float = 1.0
    tick: float = 0.2  # the longest a read waits before the loop looks at held events again
    max_backlog: int = 10_000
    durable: bool = True  # fdatasync the output before each checkpoint
    blocked_retry: float = 1.0  # how often a full output is tried again
    warm_lookups: bool = True
    report_every: float = 60.0  # the same problem is printed at most this often


class CheckpointSaveError(RuntimeError):
    """The checkpoint could not be saved where the run cannot go on without it (one line)."""


class Pipeline:
    def __init__(
        self,
        source: Source,
        assembler: EventAssembler,
        resolver: Resolver,
        writer: OutputWriter,
        settings: Settings,
        *,
        checkpoint_path: Path | None = None,
        restored: Checkpoint | None = None,
        filter: Filter | None = None,
        metrics: Metrics | None = None,
        report: Callable[[str, str], None] | None = None,
        stats: Stats | None = None,
        metrics_textfile: Path | None = None,
    ) -> None:
        self.source = source
        self.assembler = assembler
        self.resolver = resolver
        self.writer = writer
        self.settings = settings
        self.filter = filter if filter is not None and not filter.empty else None
        self.metrics = metrics
        self.stats = stats or Stats()
        self.report = report or Reporter(metrics, self.stats)
        self.checkpoint_path = checkpoint_path if source.checkpointable else None
        # Lines from a source anyone could have written to say so (see sources.py).
        self._unverified = not getattr(source, "verified", True)
        self.metrics_textfile = metrics_textfile
        self._seq = 0
        self._batches: deque[tuple[int, Batch]] = deque()
        self._backlog: deque[_Held] = deque()
        self._unflushed: deque[tuple[int, int, str]] = deque()  # (lower, emit, key) per pending line
        self._written: deque[tuple[int, str]] = deque()  # (emit, key) of events done
        self._carried: list[tuple[int, str]] = []  # (lines, key) from the restored checkpoint
        self._skip: dict[str, int] = {}
        self._last_checkpoint = time.monotonic()
        self._last_textfile = 0.0
        self._blocked_until = 0.0
        self._lost_seen: dict[str, int] = {}
        # (pid, audit timestamp as written) -> (answer, when asked), from the lookups at read time
        self._warmed: dict[tuple[int, str], tuple[Lookup, float]] = {}
        self._warmed_at = 0.0
        if restored is not None and self.checkpoint_path is not None:
            for key, ahead in restored.written:
                self._carried.append((ahead, key))
                self._skip[key] = self._skip.get(key, 0) + 1

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> Stats:
        """Read until the source ends (no-follow) or `stop` is set; then write out and checkpoint."""
        stop = stop or threading.Event()
        keep_freed_heap()
        try:
            while not stop.is_set():
                if not self.step():
                    break
            self.finish(stopped=stop.is_set())
        finally:
            self.close()
        return self.stats

    def step(self, timeout: float | None = None) -> bool:
        """One round: read what came (waiting at most `timeout`, by default until something is due),
        release, resolve, write, flush, checkpoint when due. False once the source has ended."""
        now = time.monotonic()
        if self._blocked(now):
            time.sleep(min(self.settings.blocked_retry, 0.2))
            return True
        batch = self.source.read(self._timeout(now) if timeout is None else timeout)
        now = time.monotonic()
        if batch is not None:
            self._take(batch, now)
        self._flush_assembler(now)
        self._drain(now, final=False)
        self._flush(now)
        self._account_losses()
        if self.source.eof:
            return False
        self._maybe_checkpoint(now)
        return True

    def checkpoint_now(self) -> None:
        self._checkpoint(time.monotonic())

    def close(self) -> None:
        """Let go of the source and the output (after finish(), or to drop the run as a crash would)."""
        self.source.close()
        self.writer.close()

    def _timeout(self, now: float) -> float:
        timeout = self.settings.tick
        deadline = self.assembler.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now))
        if self._backlog:
            timeout = min(timeout, 0.05)
        return timeout

    def _take(self, batch: Batch, now: float) -> None:
        lines = batch.lines
        if not lines:
            return
        base = self._seq
        self._seq += len(lines)
        if self.checkpoint_path is not None:
            self._batches.append((base, batch))
        self.stats.lines += len(lines)
        if self.metrics is not None:
            self.metrics.lines.inc(len(lines))
        pending = self.assembler.pending_position()
        lower = base if pending is None else _seq_of(pending)
        mains: list[tuple[str | None, str]] | None = (
            [] if self.settings.warm_lookups and self._recent(batch) else None
        )
        assembler = self.assembler
        # In slices, so that what one call releases (and holds until it is written) stays small
        # whatever the batch.
        for at in range(0, len(lines), _SLICE):
            part = lines[at : at + _SLICE] if len(lines) > _SLICE else lines
            if batch.types is not None:
                types = batch.types[at : at + _SLICE]
                released = assembler.feed_netlink_many(types, part, base + at, now, mains=mains)
            else:
                released = assembler.feed_many(part, base + at, now, mains=mains)
            if mains:
                self._warm(mains, now)
                mains.clear()
            if released:
                self._release_all(released, now, lower)

    def _warm(self, mains: list[tuple[str | None, str]], now: float) -> None:
        """Ask about each new main record's process as soon as its line is parsed, so that a process
        killed by its seccomp filter is still in /proc (the resolver remembers it from then on)."""
        warmed = self._warmed
        if now - self._warmed_at > _WARM_TTL or len(warmed) > _WARM_MAX:
            warmed.clear()  # forget answers older than the TTL, in one go
            self._warmed_at = now
        lookup = self.resolver.lookup
        for pid_text, audit_id in mains:
            pid = uint(pid_text, 0x7FFFFFFF)
            if not pid:
                continue
            stamp = audit_id.partition(":")[0]
            key = (pid, stamp)
            if key in warmed:
                continue
            try:
                warmed[key] = (lookup(pid, float(stamp)), now)
            except Exception:
                self.stats.resolver_errors += 1

    @staticmethod
    def _recent(batch: Batch) -> bool:
        """Whether the batch ends with records of the last minute: for older ones (a log read after the
        fact, a backlog) a process that exited is long gone and a live one is found at release time."""
        for line in reversed(batch.lines[-16:]):
            stamp = _STAMP.search(line)
            if stamp is not None:
                return time.time() - int(stamp[1]) < _WARM_RECENT
        return True

    def _resolve(self, event: AuditEvent) -> Lookup:
        pid = event.pid
        if pid is None or pid <= 0:
            return _NOT_A_PROCESS
        if self._warmed:
            warm = self._warmed.get((pid, event.audit_id.partition(":")[0]))
            if warm is not None and warm[0].settled:
                return warm[0]
        try:
            return self.resolver.lookup(pid, event.timestamp)
        except Exception as exc:  # a resolver bug must not lose the event
            self.stats.resolver_errors += 1
            self.report("resolver_error", f"container lookup of pid {pid} failed: {exc!r}")
            return _NOT_A_PROCESS

    def _flush_assembler(self, now: float | None) -> None:
        """Release what the assembler holds past its hold (now) or everything (None)."""
        before = self.assembler.pending_position()
        events = self.assembler.flush(now)
        if events:
            # Whatever is released was held, so its first line is at or after the earliest held one.
            lower = self._seq if before is None else _seq_of(before)
            self._release(events, time.monotonic(), lower, self._seq - 1)

    def _release(self, events: list[AuditEvent], now: float, lower: int, emit: int) -> None:
        self._release_all([(emit, events)], now, lower)

    def _release_all(self, released: list[tuple[int, list[AuditEvent]]], now: float, lower: int) -> None:
        """Resolve and write (or hold in the backlog) each (emit, events) the assembler gave back, in
        one loop for them all: a SECCOMP record that went out alone is one (emit, [event]) of its own."""
        deadline = now + self.settings.backlog_seconds
        self.stats.events += sum(len(events) for _, events in released)
        backlog = self._backlog
        resolve = self._resolve
        write = self._write
        for emit, events in released:
            for event in events:
                lookup = resolve(event)
                if not backlog and lookup.settled:
                    write(event, lookup.info, lower, emit)
                else:
                    backlog.append(_Held(event, lower, emit, lookup, deadline))

    def _drain(self, now: float, *, final: bool) -> None:
        backlog = self._backlog
        while backlog:
            head = backlog[0]
            if not head.lookup.settled:
                if now < head.deadline and len(backlog) <= self.settings.max_backlog:
                    head.lookup = self._resolve(head.event)
                    if not head.lookup.settled:
                        if final:
                            time.sleep(0.05)
                            now = time.monotonic()
                            continue
                        break
                else:
                    self.stats.unsettled_timeouts += 1
            backlog.popleft()
            self._write(head.event, head.lookup.info, head.lower, head.emit)
        if self.metrics is not None:
            self.metrics.backlog.set(len(backlog))

    def _key(self, event: AuditEvent) -> str:
        return f"{event.node or ''}|{event.audit_id}|{event.record_type}"

    def _write(self, event: AuditEvent, info: ContainerInfo | None, lower: int, emit: int) -> None:
        tracking = self.checkpoint_path is not None
        key = self._key(event) if tracking else ""
        if self._skip and key in self._skip:
            left = self._skip[key] - 1
            if left:
                self._skip[key] = left
            else:
                del self._skip[key]
            self.stats.duplicates += 1
            if self.metrics is not None:
                self.metrics.duplicates.inc()
            # Its carried entry keeps it in the next checkpoints for as long as it may be read again.
            return
        record = _build_record(event, info, self.settings.node)
        if self._unverified:
            record["verified"] = False
        if self.filter is not None and not self.filter.accepts(record):
            self.stats.filtered += 1
            if self.metrics is not None:
                self.metrics.filtered.inc()
            return
        self.writer.append(_encode(record))
        if tracking:
            self._unflushed.append((lower, emit, key))
        if self.metrics is not None:
            self.metrics.event(record)

    def _flush(self, now: float) -> None:
        writer = self.writer
        if writer.pending and self.checkpoint_path is not None and not self.stats.checkpoints:
            # Before the first line of this run reaches the output, so that a run killed before its
            # first regular checkpoint is rolled back too; without it, stop before writing anything.
            self._checkpoint(now, must=True)
        while writer.pending:
            done = writer.flush()
            self.stats.written += done
            if self._unflushed:
                for _ in range(done):
                    _lower, emit, key = self._unflushed.popleft()
                    self._written.append((emit, key))
            if writer.error is not None:
                self._blocked_until = now + self.settings.blocked_retry
                self.report(
                    "output_full",
                    f"{writer.error}; holding {writer.pending} lines and retrying (nothing is lost while "
                    "the enricher runs)",
                )
                return
            if writer.rotate_due():
                self._checkpoint(now)  # the old file is complete: what the checkpoint says is in it
                writer.rotate()
                self._checkpoint(now)

    def _blocked(self, now: float) -> bool:
        if not self.writer.pending or self.writer.error is None:
            return False
        if now < self._blocked_until:
            return True
        self._flush(now)
        return self.writer.error is not None

    def _account_losses(self) -> None:
        if self.metrics is None:
            return
        for reason, attr in (("kmsg_overwritten", "lost"), ("printk_ratelimit", "suppressed"),
                             ("netlink_overrun", "lost_overrun")):
            value = getattr(self.source, attr, None)
            if isinstance(value, int):
                seen = self._lost_seen.get(reason, 0)
                if value > seen:
                    self.metrics.lost_records(reason, value - seen)
                    self._lost_seen[reason] = value

    # -- checkpoints ---------------------------------------------------------------------------------------

    def resume_seq(self) -> int:
        """R: the first line a restart must read again (see the module docstring)."""
        candidates = [self._seq]
        pending = self.assembler.pending_position()
        if pending is not None:
            candidates.append(_seq_of(pending))
        if self._backlog:
            candidates.append(self._backlog[0].lower)
        if self._unflushed:
            candidates.append(self._unflushed[0][0])
        return min(candidates)

    def _mark_for(self, seq: int) -> SourceMark | None:
        if seq >= self._seq:
            return self.source.end_mark()
        for base, batch in self._batches:
            if base <= seq < base + len(batch.lines):
                return batch.locate(seq - base)
        if self._batches and seq < self._batches[0][0]:
            base, batch = self._batches[0]
            return batch.locate(0)
        return self.source.end_mark()

    def _maybe_checkpoint(self, now: float) -> None:
        interval = self.settings.checkpoint_interval
        if self.checkpoint_path is not None and now - self._last_checkpoint >= interval:
            self._checkpoint(now)
        if self.metrics_textfile is not None and now - self._last_textfile >= interval:
            self._last_textfile = now
            self._write_textfile()

    def _write_textfile(self) -> None:
        if self.metrics is not None and self.metrics_textfile is not None:
            try:
                self.metrics.write_textfile(self.metrics_textfile)
            except OSError as exc:
                self.report("textfile_error", f"cannot write {self.metrics_textfile}: {exc.strerror}")

    def _prune(self, resume: int) -> None:
        batches = self._batches
        while batches and batches[0][0] + len(batches[0][1].lines) <= resume:
            batches.popleft()
        written = self._written
        while written and written[0][0] < resume:
            written.popleft()

    def _checkpoint(self, now: float, *, must: bool = False) -> None:
        """Save where a restart resumes. A failure is reported and tried again at the next interval;
        with `must` (the first before any output, the last at exit) it raises CheckpointSaveError."""
        self._last_checkpoint = now
        if self.checkpoint_path is None:
            return
        resume = self.resume_seq()
        mark = self._mark_for(resume)
        if mark is None:
            return
        self._prune(resume)
        if self._carried:
            kept = []
            for ahead, key in self._carried:
                if ahead >= resume:
                    kept.append((ahead, key))
                elif key in self._skip:
                    # Read past every line it could be in: it will not come again.
                    left = self._skip.pop(key) - 1
                    if left > 0:
                        self._skip[key] = left
            self._carried = kept
        written = [(key, emit - resume) for emit, key in self._written if emit >= resume]
        written += [(key, ahead - resume) for ahead, key in self._carried]
        if self.settings.durable:
            self.writer.sync()
        cp = Checkpoint(self.source.name, mark, tuple(written), self.writer.mark())
        try:
            cpmod.save(self.checkpoint_path, cp, durable=self.settings.durable)
        except OSError as exc:
            if must:
                raise CheckpointSaveError(
                    f"cannot save the checkpoint {self.checkpoint_path}: {exc}; the next run resumes "
                    "from the last checkpoint saved (or --start) and writes what came after it again"
                ) from None
            self.report("checkpoint_error", f"cannot write the checkpoint: {exc}")
            return
        self.stats.checkpoints += 1

    def finish(self, *, stopped: bool) -> None:
        """End of input or a stop: write what can be written, then the last checkpoint."""
        now = time.monotonic()
        # With a checkpoint, events still held by the assembler are left for the next run (their lines
        # are re-read from the checkpoint); without one they would be lost, so they go out now.
        if not stopped or self.checkpoint_path is None:
            self._flush_assembler(None)
        self._drain(now, final=True)
        deadline = time.monotonic() + 30.0
        while self.writer.pending and time.monotonic() < deadline:
            self._flush(time.monotonic())
            if self.writer.error is not None:
                time.sleep(self.settings.blocked_retry)
        self._account_losses()
        self._checkpoint(time.monotonic(), must=True)
        self._write_textfile()


def _seq_of(position: object) -> int:
    # The assembler hands back the positions it was fed, which are this module's line numbers.
    assert isinstance(position, int)
    return position


def restore(checkpoint_path: Path | None, source_name: str, report: Callable[[str, str], None],
            output_path: Path | None) -> Checkpoint | None:
    """Load the checkpoint for `source_name` and cut the output back to it (see the module docstring)."""
    if checkpoint_path is None:
        return None
    cp = cpmod.load(checkpoint_path)
    if cp is None:
        return None
    if cp.source != source_name:
        report("checkpoint_other_source",
               f"checkpoint {checkpoint_path} is for source {cp.source}, not {source_name}: not using it")
        return None
    if cp.output is not None and output_path is not None and Path(cp.output.path) == output_path:
        try:
            cut = OutputWriter.roll_back(output_path, cp.output)
        except OutputMismatchError as exc:
            report("output_mismatch", str(exc))
            cut = 0
        if cut:
            report("output_rolled_back", f"cut {cut} bytes written to {output_path} after the last "
                   "checkpoint; they are written again")
    return cp


__all__ = [
    "CheckpointSaveError", "OutputClosedError", "Pipeline", "Settings", "SourceError", "Stats", "restore",
]
