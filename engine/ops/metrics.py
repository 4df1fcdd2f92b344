"""Prometheus metrics of one hookwise process, served at ``/metrics``.

:class:`Metrics` owns its registry (no process-wide default registry): the daemon builds
one and hands it to the receiver, the worker and the reload, which call the recording
methods below; ``None`` in their place records nothing. Queue depth is read from the
store when scraped, not kept in memory, so every process sharing a store reports the
same numbers.

Labels stay bounded: sources are configured names (a request to an unknown source counts
as ``unknown``), rules and actions come from the loaded rule set, statuses and outcomes
are fixed sets. No label carries an event's data or a secret.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import StoreError
from ..run.runs import StepResult
from ..store import QUEUE_STATUSES

log = logging.getLogger("hookwise.metrics")

#: The text format ``generate_latest`` writes, understood by every Prometheus version.
#: (Recent prometheus-client versions name format 1.0.0 in CONTENT_TYPE_LATEST: not this output.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Label of a request to a path that names no configured source.
UNKNOWN_SOURCE = "unknown"

#: Step latency buckets, seconds: from a local log step to a slow HTTP call at its timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

QueueCounts = Callable[[], dict[str, dict[str, int]]]
#: The delivery control's state of each host (``engine.run.delivery.Delivery.hosts``).
HostStates = Callable[[], list[dict[str, Any]]]


class Metrics:
    """The counters, histograms and scrape-time gauges of one process."""

    def __init__(self, queue_counts: QueueCounts | None = None, hosts: HostStates | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "hookwise_events_received", "Webhook requests answered, by source and HTTP status.", ["source", "status"],
            registry=r)
        self.rule_matches = Counter("hookwise_rule_matches", "Runs created, by rule.", ["rule"], registry=r)
        self.shadow_matches = Counter(
            "hookwise_shadow_matches", "Shadow runs created (rendered, no action run), by rule.", ["rule"], registry=r
        )
        self.steps = Counter(
            "hookwise_steps", "Step attempts recorded, by action and outcome "
            "(succeeded, skipped, retried, failed: attempts used up with continue_on_error, dead).",
            ["action", "outcome"], registry=r)
        self.step_seconds = Histogram(
            "hookwise_step_duration_seconds", "Time a step attempt ran, by action (skipped steps excluded).",
            ["action"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.dead_runs = Counter("hookwise_dead_runs", "Runs that died: a step used up its attempts.", registry=r)
        self.reloads = Counter("hookwise_reloads", "Successful reloads of the config and rules.", registry=r)
        self.reload_failures = Counter(
            "hookwise_reload_failures", "Reloads refused (the previous rules stayed).", registry=r
        )
        if queue_counts is not None:
            r.register(QueueDepth(queue_counts))
        if hosts is not None:
            r.register(HostGauges(hosts))
        # Labelled children by their labels: finding one anew costs more than counting.
        self._children: dict[tuple[Any, ...], Any] = {}

    # --- recording --------------------------------------------------------------------

    def received(self, source: str, status: int) -> None:
        self._child(self.events_received, source, status).inc()

    def matched(self, rule: str, *, shadow: bool = False) -> None:
        self._child(self.shadow_matches if shadow else self.rule_matches, rule).inc()

    def recorded(self, results: Iterable[StepResult]) -> None:
        """Count step results as they are handed to the store."""
        for result in results:
            if result.outcome == "deferred":  # not an attempt: the host's gauges count these
                continue
            outcome = step_outcome(result)
            action = result.task.action
            self._child(self.steps, action, outcome).inc()
            if outcome != "skipped":
                self._child(self.step_seconds, action).observe(max(0.0, result.finished_at - result.started_at))
            if outcome == "dead":
                self.dead_runs.inc()

    def _child(self, metric: Any, *labels: Any) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:  # a race here only makes the same child twice: labels() is safe
            child = self._children[key] = metric.labels(*map(str, labels))
        return child

    def reloaded(self, ok: bool) -> None:
        (self.reloads if ok else self.reload_failures).inc()

    # --- exposition -------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (serve it with :data:`CONTENT_TYPE`),
        without the ``*_created`` series."""
        return generate_latest(WithoutCreated(self.registry))


class WithoutCreated(Collector):
    """A registry's metrics without the ``*_created`` sample prometheus-client adds to each
    counter and histogram series: a second series per series, holding the time the
    process first counted it, which no question of an operator needs. (The library's own
    switch, ``disable_created_metrics()``, is process-wide; this view is ours alone.)"""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            kept = copy.copy(metric)
            kept.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield kept


def step_outcome(result: StepResult) -> str:
    """What a recorded result means for its step: succeeded, skipped, retried (another
    attempt is scheduled), failed (no attempt left, but continue_on_error) or dead (no
    attempt left: the run is dead)."""
    if result.outcome != "failed":
        return result.outcome
    if result.retry_in is not None:
        return "retried"
    return "failed" if result.continue_on_error else "dead"


class QueueDepth(Collector):
    """``hookwise_queue_items{queue, status}``, read from the store at scrape time."""

    NAME = "hookwise_queue_items"
    HELP = "Work queue items, by queue and status."

    def __init__(self, counts: QueueCounts) -> None:
        self.counts = counts

    def describe(self) -> Sequence[Metric]:
        # Without this the registry would call collect(), and the store, on register.
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["queue", "status"])]

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.counts()
        except StoreError as exc:  # the scrape still answers; the gauge is absent meanwhile
            log.warning("queue depth not collected: %s", exc)
            return
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["queue", "status"])
        for queue, by_status in sorted(counts.items()):
            for status in sorted({*QUEUE_STATUSES, *by_status}):  # every status, 0 when empty: no series disappears
                family.add_metric([queue, status], by_status.get(status, 0))
        yield family


class HostGauges(Collector):
    """Delivery control by destination host, read at scrape time: calls in flight, the
    breaker's state, calls made and failed, and steps deferred by reason. Hosts are those
    this process has called (at most ``engine.run.delivery.MAX_HOSTS``)."""

    def __init__(self, hosts: HostStates) -> None:
        self.hosts = hosts

    def describe(self) -> Sequence[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        in_flight, breaker, calls, failed, deferred = families
        for host in self.hosts():
            name = host["host"]
            in_flight.add_metric([name], host["in_flight"])
            for state in ("closed", "open", "half-open"):
                breaker.add_metric([name, state], 1 if host["breaker"] == state else 0)
            calls.add_metric([name], host["calls"])
            failed.add_metric([name], host["failed"])
            for reason, count in sorted(host["deferred"].items()):
                deferred.add_metric([name, reason], count)
        yield from families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily,
                             CounterMetricFamily]:
        return (
            GaugeMetricFamily("hookwise_host_in_flight", "http calls in flight, by destination host.", labels=["host"]),
            GaugeMetricFamily(
                "hookwise_host_breaker", "The circuit breaker of a destination host: 1 for its current state.",
                labels=["host", "state"],
            ),
            CounterMetricFamily("hookwise_host_calls", "http calls started, by destination host.", labels=["host"]),
            CounterMetricFamily(
                "hookwise_host_failures", "http calls that failed (no connection, timeout, 5xx, 429).", labels=["host"],
            ),
            CounterMetricFamily(
                "hookwise_host_deferred",
                "Steps handed back without spending an attempt, by host and reason (concurrency, rate, breaker).",
                labels=["host", "reason"],
            ),
        )
