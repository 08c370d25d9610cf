"""Prometheus metrics for /metrics (implements contracts.metrics.Metrics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class PrometheusMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._events = Counter(
            "surface_events_handled",
            "Matrix events handled",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "surface_reply_latency_seconds",
            "From event dispatch to handled",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self._platform_errors = Counter(
            "surface_platform_errors", "Agent platform errors", ["code"], registry=self.registry
        )
        self._sync = Histogram(
            "surface_sync_seconds", "Duration of one /sync round", registry=self.registry
        )
        self._restarts = Gauge(
            "surface_task_restarts",
            "Restarts per supervised task",
            ["task"],
            registry=self.registry,
        )
        self._ready = Gauge("surface_ready", "1 when reconciled and synced", registry=self.registry)
        self._extra: list[Callable[[], None]] = []

    def event_handled(self, kind: str, outcome: str) -> None:
        self._events.labels(kind=kind, outcome=outcome).inc()

    def reply_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def platform_error(self, code: str) -> None:
        self._platform_errors.labels(code=code).inc()

    def sync_completed(self, seconds: float) -> None:
        self._sync.observe(seconds)

    def set_restarts(self, restarts: Mapping[str, int]) -> None:
        for task, count in restarts.items():
            self._restarts.labels(task=task).set(count)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def gauge_source(self, name: str, doc: str, read: Callable[[], Mapping[str, float]]) -> None:
        """Expose values read at scrape time (e.g. platform pool statistics)."""
        gauge = Gauge(name, doc, ["field"], registry=self.registry)

        def refresh() -> None:
            for field, value in read().items():
                gauge.labels(field=field).set(value)

        self._extra.append(refresh)

    def render(self) -> bytes:
        for refresh in self._extra:
            refresh()
        return generate_latest(self.registry)
