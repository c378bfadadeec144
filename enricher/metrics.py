"""Prometheus counters of the enricher: events by node, type, namespace, pod, container, syscall and
action, and the enricher's own health (lines read, problems, records lost before we got them).

Served over HTTP with prometheus_client (`--metrics-port`) and/or written to a node-exporter textfile
(`--metrics-textfile`, replaced atomically). Each Metrics has its own registry, so several pipelines
in one process (tests) do not mix.

Label sets come from the node's workloads, so they grow with every pod that ever ran. After
`max_series` distinct sets, new ones are counted under pod/container/syscall "_other" (namespace,
type and action stay exact), so a long-running node agent's memory and scrape size stay bounded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from syscribe.enricher.problems import PROBLEMS

EVENT_LABELS = ("node", "type", "namespace", "pod", "container", "syscall", "action")
OTHER = "_other"


def _label(value: object) -> str:
    return "" if value is None else str(value)


class _EventCounts(Collector):
    """The per-event counter, kept in a plain dict and turned into samples at scrape time: a
    prometheus_client Counter child costs a lock and a few calls per event, this one a dict update."""

    def __init__(self) -> None:
        self.counts: dict[tuple[object, ...], int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "syscribe_enricher_events", "Enriched audit events written", labels=EVENT_LABELS
        )
        # dict.copy() runs without releasing the GIL: a consistent snapshot while events are counted.
        for key, value in self.counts.copy().items():
            family.add_metric([_label(v) for v in key], value)
        yield family


class Metrics:
    def __init__(self, *, max_series: int = 10_000) -> None:
        self.registry = CollectorRegistry()
        self.max_series = max_series
        self._events = _EventCounts()
        self.registry.register(self._events)
        self.lines = Counter("syscribe_enricher_lines", "Lines (or messages) read from the source",
                             registry=self.registry)
        self.filtered = Counter("syscribe_enricher_filtered_events", "Events not written because of a filter",
                                registry=self.registry)
        self.duplicates = Counter(
            "syscribe_enricher_duplicate_events",
            "Events read again after a restart and not written twice",
            registry=self.registry,
        )
        self.problems = Counter(
            "syscribe_enricher_problems", "Problems met (bad input, rotation, output errors), by kind",
            ["kind"], registry=self.registry,
        )
        for kind in sorted(PROBLEMS):
            self.problems.labels(kind)  # exported at 0 before it first happens
        self.lost = Counter(
            "syscribe_enricher_lost_records",
            "Audit records lost before the enricher could read them, by reason",
            ["reason"], registry=self.registry,
        )
        self.backlog = Gauge("syscribe_enricher_backlog_events",
                             "Events waiting for their container to be known", registry=self.registry)
        self._server: Any = None

    def event(self, record: Mapping[str, Any]) -> None:
        key = (
            record["node"], record["type"], record["namespace"], record["pod"], record["container"],
            record["syscallName"] or record["syscallID"], record["action"],
        )
        counts = self._events.counts
        count = counts.get(key)
        if count is None and len(counts) >= self.max_series:
            key = (key[0], key[1], key[2], OTHER, OTHER, OTHER, key[6])
            count = counts.get(key)
        counts[key] = 1 if count is None else count + 1

    def event_count(self, **labels: str) -> int:
        """The sum of the event counts whose labels match `labels` (tests, summaries)."""
        total = 0
        for key, value in self._events.counts.copy().items():
            named = dict(zip(EVENT_LABELS, (_label(v) for v in key), strict=True))
            if all(named.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def problem(self, kind: str) -> None:
        self.problems.labels(kind).inc()

    def lost_records(self, reason: str, count: int) -> None:
        if count > 0:
            self.lost.labels(reason).inc(count)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        server = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server

    def write_textfile(self, path: Path) -> None:
        write_to_textfile(str(path), self.registry)

    def stop(self) -> None:
        if self._server is not None:
            server = self._server[0] if isinstance(self._server, tuple) else None
            if server is not None:
                server.shutdown()
            self._server = None
