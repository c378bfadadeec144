"""How the enricher tells of problems: each counted (in its stats and, for the codes problems.PROBLEMS
lists, in Prometheus), and printed as one line on stderr, the same kind at most once per interval."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from syscribe.enricher.metrics import Metrics
from syscribe.enricher.problems import PROBLEMS


class ProblemCounts(Protocol):
    """Where the counts per code are kept (the pipeline's Stats)."""

    problems: dict[str, int]


class Reporter:
    """Problems and notable happenings (problems.Problem, problems.Notice): problems counted (metrics),
    each printed as one line to stderr, the same kind at most once per `every` seconds (with how many
    were not printed)."""

    def __init__(self, metrics: Metrics | None, stats: ProblemCounts, *, every: float = 60.0,
                 stream: Any = None, quiet: bool = False) -> None:
        self._metrics = metrics
        self._stats = stats
        self._every = every
        self._stream = stream if stream is not None else sys.stderr
        self._quiet = quiet
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, code: str, message: str) -> None:
        self._stats.problems[code] = self._stats.problems.get(code, 0) + 1
        if self._metrics is not None and code in PROBLEMS:
            self._metrics.problem(code)
        if self._quiet:
            return
        now = time.monotonic()
        last = self._last.get(code)
        if last is not None and now - last[0] < self._every:
            self._last[code] = (last[0], last[1] + 1)
            return
        more = f" ({last[1]} more like this)" if last is not None and last[1] else ""
        self._last[code] = (now, 0)
        print(f"syscribe enrich: {message}{more}", file=self._stream, flush=True)
