"""The node agent's Prometheus metrics: what it made, what it refused, and what it is waiting for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from syscribe.controller.agent import Agent


class AgentCollector(Collector):
    """Read at scrape time from the agent's own counters: nothing to keep in step."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        stats = self.agent.stats
        yield CounterMetricFamily(
            "syscribe_agent_dumps_processed", "Dumps made into SeccompProfiles", value=stats.processed
        )
        quarantined = CounterMetricFamily(
            "syscribe_agent_dumps_quarantined", "Dumps moved to quarantine", labels=["reason"]
        )
        for reason, count in sorted(stats.quarantined.items()):
            quarantined.add_metric([reason], count)
        yield quarantined
        yield CounterMetricFamily(
            "syscribe_agent_api_errors", "Kubernetes API calls that failed", value=stats.api_errors
        )
        yield CounterMetricFamily(
            "syscribe_agent_retries", "Dumps put back to be tried again", value=stats.retries
        )
        yield GaugeMetricFamily(
            "syscribe_agent_pending_dumps", "Dumps seen and not finished with", value=self.agent.pending()
        )
        waiting = GaugeMetricFamily(
            "syscribe_agent_waiting_dumps", "Dumps waiting, by what they wait for", labels=["waiting_for"]
        )
        for reason, count in sorted(stats.waiting.items()):
            waiting.add_metric([reason[:200]], count)
        yield waiting
        yield GaugeMetricFamily(
            "syscribe_agent_installed_profiles",
            "Profiles in the kubelet's seccomp directory",
            value=stats.installed,
        )


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return registry


def serve_agent_metrics(agent: Agent, port: int, addr: str = "0.0.0.0") -> ThreadingHTTPServer:
    handler = MetricsHandler.factory(registry_for(agent))
    server = ThreadingHTTPServer((addr, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="agent-metrics").start()
    return server
