"""The throughput and soak benchmarks' decisions: rate steps, held or not, growth, error lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.config import QUICK, load_config
from benchmarks.load import Reply, Sent, Tally, bot_replies, message_count, schedule, tally
from benchmarks.load_report import load_chart, load_rows
from benchmarks.observer import Arrival
from benchmarks.report import goals, headline
from benchmarks.soak import error_lines, rss_growth, soak_rate
from benchmarks.throughput import RateSteps
from contracts.markers import REPLY_TO_FIELD


def _run(steps: RateSteps, held_up_to: float) -> list[float]:
    """Drive the stepper against a system that holds every rate up to `held_up_to`."""
    tried = []
    while (rate := steps.next_rate()) is not None:
        tried.append(rate)
        steps.record(rate, rate <= held_up_to)
        assert len(tried) < 50
    return tried


def test_the_rate_doubles_until_a_step_fails_twice_then_bisects() -> None:
    steps = RateSteps(start=2, max_rate=512, refinements=2)

    tried = _run(steps, held_up_to=20)

    assert tried == [2, 4, 8, 16, 32, 32, 24, 24, 20]
    assert steps.held == 20 and steps.failed == 24 and not steps.capped


def test_a_failure_that_holds_on_its_retry_keeps_climbing() -> None:
    steps = RateSteps(start=2, max_rate=16, refinements=1)
    outcomes = iter([True, False, True, True, True])

    tried = []
    while (rate := steps.next_rate()) is not None:
        tried.append(rate)
        steps.record(rate, next(outcomes))

    assert tried == [2, 4, 4, 8, 16]
    assert steps.held == 16 and steps.failed is None and steps.capped


def test_a_side_that_holds_nothing_is_bisected_towards_zero() -> None:
    steps = RateSteps(start=2, max_rate=64, refinements=2)

    tried = _run(steps, held_up_to=0.7)

    assert tried == [2, 2, 1.0, 1.0, 0.5]
    assert steps.held == 0.5 and steps.failed == 1.0


def test_no_retries_and_no_refinement_stop_at_the_first_failure() -> None:
    steps = RateSteps(start=1, max_rate=64, refinements=0, retries=0)

    assert _run(steps, held_up_to=5) == [1, 2, 4, 8]
    assert steps.held == 4 and steps.failed == 8


def test_a_start_above_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="start"):
        RateSteps(start=8, max_rate=4, refinements=0)


def test_sends_are_evenly_spaced_and_a_step_has_rate_times_duration_messages() -> None:
    assert schedule(4, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert message_count(4, 10) == 40
    assert message_count(2.5, 3) == 8
    assert message_count(0.1, 1) == 1
    with pytest.raises(ValueError, match="positive"):
        schedule(0, 3)


def _sent(key: str, at: float = 10.0) -> Sent:
    return Sent(key, f"echo: {key}", due=at, sent_at=at + 0.001, acked_at=at + 0.02)


def test_round_trips_run_from_the_send_to_the_complete_answer() -> None:
    sent = [_sent("$a"), _sent("$b", 11.0)]
    replies = [
        Reply("$a", 10.101, "echo: $a", is_edit=False),
        Reply("$b", 11.2, "echo: partial", is_edit=False),
        Reply("$b", 11.401, "echo: $b", is_edit=True),  # the edit completes it
    ]

    result = tally(sent, replies)

    assert result.answered == 2 and result.lost == 0 and result.duplicated == 0
    assert result.latencies_ms == pytest.approx([100.0, 400.0])
    assert result.lag_ms == pytest.approx([1.0, 1.0])
    assert result.held()


def test_a_missing_answer_is_lost_and_a_second_answer_is_a_duplicate() -> None:
    sent = [_sent("$a"), _sent("$b"), _sent("$c")]
    replies = [
        Reply("$a", 10.1, "echo: $a", is_edit=False),
        Reply("$a", 10.3, "echo: $a", is_edit=False),
        Reply("$b", 10.2, "echo: $b", is_edit=False),
        Reply("$other", 10.2, "echo: $other", is_edit=False),
    ]

    result = tally(sent, replies)

    assert (result.answered, result.lost, result.duplicated) == (2, 1, 1)
    assert result.in_send_order == [pytest.approx(99.0), pytest.approx(199.0), None]
    assert not result.held()


def test_a_failed_send_counts_as_lost() -> None:
    failed = Sent("x", "echo: x", 10.0, 10.0, 10.1, error="M_UNKNOWN")

    result = tally([_sent("$a"), failed], [Reply("$a", 10.1, "echo: $a", is_edit=False)])

    assert (result.failed_sends, result.lost) == (1, 1)
    assert not result.held()


def test_a_step_is_held_only_with_p99_within_one_second() -> None:
    def with_latencies(values: list[float]) -> Tally:
        return Tally(len(values), 0, len(values), 0, 0, values, [0.0] * len(values))

    assert with_latencies([100.0] * 99 + [1000.0]).held()
    assert not with_latencies([100.0] * 98 + [1001.0, 1001.0]).held()
    assert with_latencies([100.0] * 98 + [1001.0, 1001.0]).held(p99_limit_ms=1500)
    assert not Tally(0, 0, 0, 0, 0, [], []).held()


def test_the_bots_answers_and_edits_are_keyed_by_the_message_they_answer() -> None:
    bot = "@bot:localhost"
    arrivals = [
        Arrival(1.0, "!r", {"sender": bot, "content": {"body": "echo: hi", REPLY_TO_FIELD: "$m"}}),
        Arrival(
            2.0,
            "!r",
            {
                "sender": bot,
                "content": {
                    "body": "* echo: hi!",
                    "m.new_content": {"body": "echo: hi!"},
                    REPLY_TO_FIELD: "$m",
                },
            },
        ),
        Arrival(3.0, "!r", {"sender": "@user:localhost", "content": {"body": "hi"}}),
        Arrival(4.0, "!r", {"sender": bot, "content": {"body": "welcome"}}),
    ]

    assert bot_replies(arrivals, bot) == [
        Reply("$m", 1.0, "echo: hi", is_edit=False),
        Reply("$m", 2.0, "echo: hi!", is_edit=True),
    ]


def test_rss_growth_compares_the_last_window_with_the_first_after_warm_up() -> None:
    # 100 s: warm-up 0-20 s (ignored, high), first window 20-40 s at 100 MiB, last 80-100 at 104.
    samples = [(float(t), 150.0 if t < 20 else 100.0 if t < 80 else 104.0) for t in range(101)]

    growth = rss_growth(samples, 100.0)

    assert growth["growth_pct"] == 4.0
    assert (growth["first_window_mb"], growth["last_window_mb"]) == (100.0, 104.0)
    assert growth["window_s"] == [[20.0, 40.0], [80.0, 100.0]]


def test_rss_samples_after_the_soak_are_not_judged() -> None:
    samples = [(0.0, 100.0), (25.0, 100.0), (90.0, 100.0), (130.0, 200.0)]

    assert rss_growth(samples, 100.0)["growth_pct"] == 0.0


def test_rss_growth_needs_a_sample_in_each_window() -> None:
    with pytest.raises(ValueError, match="window"):
        rss_growth([(0.0, 100.0), (95.0, 100.0)], 100.0)


def test_error_lines_are_json_lines_at_error_or_critical_and_raw_tracebacks() -> None:
    log = "\n".join(
        [
            json.dumps({"event": "turn.done", "level": "info"}),
            json.dumps({"event": "send.failed", "level": "error"}),
            json.dumps({"event": "supervisor.crashed", "level": "critical"}),
            json.dumps({"event": "retry", "level": "warning"}),
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "",
        ]
    )

    found = error_lines(log)

    assert len(found) == 3
    assert "send.failed" in found[0] and "supervisor.crashed" in found[1]
    assert found[2].startswith("Traceback")


def test_the_soak_rate_is_the_flag_else_half_the_held_rate_else_a_fallback() -> None:
    assert soak_rate(7.0, 40.0) == (7.0, "flag")
    assert soak_rate(0.0, 25.0) == (12.5, "half the held rate")
    assert soak_rate(0.0, 0.6) == (0.5, "half the held rate")
    assert soak_rate(0.0, None)[1].startswith("fallback")


def test_quick_and_full_sizes_and_the_new_scenarios() -> None:
    full = load_config([], env={})
    quick = load_config(["--quick", "--soak-s", "30", "--scenarios", "throughput,soak"], env={})

    assert (full.throughput_rooms, full.soak_s) == (100, 600.0)
    assert (QUICK.throughput_rooms, QUICK.soak_s) == (20, 60.0)
    assert quick.soak_s == 30.0 and quick.scenarios == ("throughput", "soak")


def _results(ratio: float, growth: float) -> dict[str, Any]:
    step = {
        "rate": 2.0,
        "p50_ms": 80.0,
        "p99_ms": 120.0,
        "held": True,
        "sent": 20,
        "answered": 20,
        "lost": 0,
        "duplicated": 0,
    }
    failed = {**step, "rate": 4.0, "p99_ms": 1500.0, "held": False}
    return {
        "throughput": {
            "rooms": 20,
            "senders": 4,
            "bot": {"held_msgs_s": 2.0 * ratio, "capped": False, "steps": [step, failed]},
            "raw": {"held_msgs_s": 2.0, "capped": False, "steps": [step, failed]},
            "ratio": ratio,
        },
        "soak": {
            **step,
            "rate": 1.0,
            "rate_source": "half the held rate",
            "duration_s": 60.0,
            "latency_ms": {"n": 20, "min": 50.0, "median": 80.0, "p95": 110.0, "max": 120.0},
            "rss": {
                "first_window_mb": 80.0,
                "last_window_mb": 80.0 * (1 + growth / 100),
                "growth_pct": growth,
                "window_s": [[12.0, 24.0], [48.0, 60.0]],
            },
            "rss_samples": [[0.0, 80.0], [30.0, 80.0], [60.0, 80.0]],
            "peak_rss_mb": 85.0,
            "error_lines": 0,
        },
    }


def test_throughput_ratio_and_soak_figures_are_headline_goals() -> None:
    h = headline(_results(0.95, 1.0), QUICK)
    g = goals(h)

    assert h["throughput_msgs_s"] == pytest.approx(1.9) and h["raw_throughput_msgs_s"] == 2.0
    assert g["throughput_ratio"] == {"value": 0.95, "goal": ">= 0.9x", "met": True}
    assert (
        g["soak_rss_growth_pct"]["met"] and g["soak_lost"]["met"] and g["soak_error_lines"]["met"]
    )
    worse = goals(headline(_results(0.8, 6.0), QUICK))
    assert not worse["throughput_ratio"]["met"] and not worse["soak_rss_growth_pct"]["met"]


def test_the_table_rows_name_the_held_rates_the_ratio_and_the_soak() -> None:
    results = _results(0.5, 6.0)

    rows = load_rows(results, goals(headline(results, QUICK)))

    assert rows[0].startswith("| throughput, bot: highest rate held, 20 rooms")
    assert "| 1 |" in rows[0]
    assert "120 / 1500!" in rows[1]
    [ratio] = [r for r in rows if r.startswith("| throughput ratio")]
    assert "| 0.50 |" in ratio and ">= 0.9x | **no** |" in ratio
    [growth] = [r for r in rows if "RSS growth" in r]
    assert "+6.00" in growth and "<= 5% | **no**" in growth
    assert any("answered exactly once | 20 | | 20 |" in r for r in rows)


def test_the_load_chart_is_drawn_only_when_a_load_scenario_ran(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    doc = {"details": _results(0.9, 1.0)}

    assert load_chart(doc, tmp_path / "load.png")
    assert (tmp_path / "load.png").stat().st_size > 0
    assert not load_chart({"details": {}}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
