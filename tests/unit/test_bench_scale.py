"""The reconciliation-at-scale figures: headline keys, goals, table rows, the scale chart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench_documents import report_document

from benchmarks.config import BenchConfig
from benchmarks.reconcile import scale_chart
from benchmarks.report import goals, headline, markdown

CONFIG = replace(BenchConfig(), reconcile_sizes=(1000, 10000))


def _s(median: float) -> dict[str, Any]:
    return {"n": 3, "min": median, "median": median, "p95": median, "max": median}


def _intact(seconds: float, reference: float, window: int) -> dict[str, Any]:
    return {
        "bot_start_to_ready_s": _s(seconds),
        "ratio_p50": round(seconds / reference, 3),
        "timeline_limit": window,
        "bot_full_state_sync_s": _s(seconds - 0.5),
        "requests": 5,
        "per_room": 0,
        "rss_mb": 100.0,
        "runs": [],
    }


def _step(reference: float) -> dict[str, Any]:
    return {
        "bot_start_to_ready_s": _s(reference * 1.5),
        "reference_sync_s": _s(reference),
        "ratio_p50": 1.5,
        "reference_sync_timeline_30_s": _s(reference * 1.3),
        "ratio_vs_timeline_30_p50": 1.15,
        "bot_startup_s": _s(0.5),
        "bot_full_state_sync_s": _s(reference * 1.3),
        "bot_after_sync_to_ready_s": _s(0.2),
        "runs": [{"requests": {"total": 5, "per_room": 0}}],
        "intact": _intact(reference * 1.4, reference, 10),
        "intact_state_after": _intact(reference * 1.1, reference, 0),
    }


def _results() -> dict[str, Any]:
    return {
        "reconcile": {"sizes": {"1000": _step(3.0), "10000": _step(30.0)}},
        "memory": {
            "idle_no_rooms": 90.0,
            "ready_1000": 105.0,
            "peak_1000_vmhwm": 110.0,
            "ready_10000": 190.0,
            "peak_10000_vmhwm": 230.0,
        },
    }


def test_the_10000_room_figures_are_headline_keys_with_their_goals() -> None:
    h = headline(_results(), CONFIG)

    assert h["reconcile_ratio_10000"] == 1.5
    assert h["reconcile_intact_ratio_10000"] == 1.4
    assert h["reconcile_intact_state_after_ratio_10000"] == 1.1
    assert h["rss_mb_10000"] == 190.0  # at ready, not the peak
    g = goals(h)
    assert g["rss_mb_10000"] == {"value": 190.0, "goal": "<= 200MiB", "met": True}
    assert g["reconcile_ratio_10000"]["met"] is False
    assert g["reconcile_per_room_requests_10000"]["met"] is True


def test_latest_md_has_the_intact_rows_and_the_memory_goal_at_10000() -> None:
    results = _results()
    document = report_document(results, CONFIG)

    lines = markdown(document).splitlines()

    assert any(
        line.startswith(
            "| reconcile 10000, database intact, MSC4222 on: start -> ready (timeline 0)"
        )
        for line in lines
    )
    [ready] = [line for line in lines if line.startswith("| bot RSS, ready 10000")]
    assert "<= 200MiB | yes |" in ready


def test_the_scale_chart_draws_time_and_memory_against_rooms(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "latest-scale.png"

    assert scale_chart({"details": _results()}, path)
    assert path.stat().st_size > 0
    assert not scale_chart({"details": {"reconcile": {"sizes": {"100": _step(0.2)}}}}, path)
