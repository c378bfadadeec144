"""Which pids had no /proc entry, and since when: the resolver's negative cache. Pure: the caller gives
the clock.

A log read after the fact (or a backlog) is full of pids whose processes are gone; each lookup of one
costs a failed open of /proc/<pid>/stat, as much as the rest of the event's work. What a miss teaches
lasts: a pid that had no process at time T is held, after T, only by processes that started after T,
and a process that started after a record was written did not write it. So a miss seen at T answers
for every record written at least `margin` seconds before T (the margin covers the clocks the resolver
compares: a record's wall time against a start time counted from a boot time in whole seconds).

Two bitmaps of PID_MAX bits (512 KiB each), a generation each: a pid missed is marked in the current
one, started at `epoch`; every mark in it was made at or after that epoch, so it answers for records
older than epoch - margin. Every `period` seconds the current one becomes the previous one and a new
one starts, so that a long-running follower's backlog (records older than the current epoch) is
answered too, and what is older than two periods is forgotten at once. Memory is fixed whatever the
input.
"""

from __future__ import annotations

PERIOD = 60.0


class GonePids:
    def __init__(self, pid_max: int, now: float, *, margin: float, period: float = PERIOD) -> None:
        if pid_max < 1:
            raise ValueError(f"pid_max must be >= 1, not {pid_max!r}")
        self.pid_max = pid_max
        self.margin = margin
        self.period = period
        self._size = pid_max // 8 + 1
        self._current = bytearray(self._size)
        self._previous = bytearray(self._size)
        self._epoch = now
        # The previous generation answers for nothing until there is one.
        self._previous_epoch = float("-inf")

    def gone(self, pid: int, at: float) -> bool:
        """Whether `pid` was seen without a process at a time when its record (written at `at`) was at
        least `margin` seconds old."""
        if not 0 < pid <= self.pid_max:
            return False
        index, bit = pid >> 3, 1 << (pid & 7)
        limit = at + self.margin
        if limit <= self._epoch and self._current[index] & bit:
            return True
        return limit <= self._previous_epoch and bool(self._previous[index] & bit)

    def add(self, pid: int, now: float) -> None:
        """`pid` had no process at `now` (or later: the caller's clock was read before it looked)."""
        if not 0 < pid <= self.pid_max:
            return
        if now < self._epoch:
            # The wall clock was set back: no mark can be placed in time any more.
            self._previous, self._previous_epoch = bytearray(self._size), float("-inf")
            self._current, self._epoch = bytearray(self._size), now
        elif now - self._epoch >= self.period:
            self._previous, self._previous_epoch = self._current, self._epoch
            self._current, self._epoch = bytearray(self._size), now
        self._current[pid >> 3] |= 1 << (pid & 7)
