"""Summaries of repeated measurements: min / median / p95 / max."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """One figure over its repeats; values in the unit the caller measured in."""

    n: int
    min: float
    median: float
    p95: float
    max: float

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        return {
            k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()
        }

    def scaled(self, factor: float) -> Summary:
        return Summary(
            self.n, self.min * factor, self.median * factor, self.p95 * factor, self.max * factor
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest-rank (no interpolation)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Sequence[float]) -> Summary:
    """Summary of at least one value. Raises ValueError for none."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples to summarize")
    return Summary(
        n=len(ordered),
        min=ordered[0],
        median=statistics.median(ordered),
        p95=percentile(ordered, 0.95),
        max=ordered[-1],
    )
