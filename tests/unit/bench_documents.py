"""The benchmark report document a test renders (benchmarks/report.py builds the real one)."""

from __future__ import annotations

from typing import Any

from benchmarks.config import BenchConfig
from benchmarks.report import goals, headline


def report_document(results: dict[str, Any], config: BenchConfig) -> dict[str, Any]:
    """What `write_results` writes for `results`, with a test machine and run line."""
    h = headline(results, config)
    return {
        **h,
        "goals": goals(h),
        "machine": {"cpu": "test", "cores": 2, "memory_gib": 1, "distro": "test"},
        "versions": {"lambda-surface": {"commit": "abc", "dirty": False}},
        "run": {"preset": config.preset, "date": "today", "duration_s": 1.0},
        "details": results,
    }
