"""What the tasks report for /metrics (real one: runtime/metrics.py, Prometheus)."""

from __future__ import annotations

from typing import Protocol


class Metrics(Protocol):
    def event_handled(self, kind: str, outcome: str) -> None: ...
    def reply_latency(self, seconds: float) -> None: ...
    def platform_error(self, code: str) -> None: ...
    def sync_completed(self, seconds: float) -> None: ...


class NullMetrics:
    def event_handled(self, kind: str, outcome: str) -> None:
        pass

    def reply_latency(self, seconds: float) -> None:
        pass

    def platform_error(self, code: str) -> None:
        pass

    def sync_completed(self, seconds: float) -> None:
        pass
