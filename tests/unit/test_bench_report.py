"""The benchmark report: the encrypted echo figure reaches latest.json's headline and latest.md."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench_documents import report_document

from benchmarks.config import QUICK, BenchConfig
from benchmarks.report import chart, goals, headline, markdown


def _summary(median: float, p95: float) -> dict[str, Any]:
    return {"n": 20, "min": median - 10, "median": median, "p95": p95, "max": p95 + 5}


def _results(ratio_p50: float) -> dict[str, Any]:
    return {
        "e2ee_echo": {
            "messages": 20,
            "encrypted_ms": _summary(100.0 * ratio_p50, 150.0),
            "plain_ms": _summary(100.0, 120.0),
            "ratio_p50": ratio_p50,
            "ratio_p95": 1.25,
            "samples": {"encrypted_ms": [], "plain_ms": []},
            "rss_mb_after": {"encrypted": 80.0, "plain": 78.0},
        }
    }


def test_the_encrypted_echo_ratio_is_a_headline_figure_with_its_goal() -> None:
    h = headline(_results(1.05), QUICK)

    assert h["e2ee_echo_ratio"] == 1.05
    assert h["e2ee_echo_ratio_p95"] == 1.25
    assert h["e2ee_echo_p50_ms"] == 105.0 and h["e2ee_plain_echo_p50_ms"] == 100.0
    assert goals(h)["e2ee_echo_ratio"] == {"value": 1.05, "goal": "<= 1.15x", "met": True}
    assert goals(headline(_results(1.2), QUICK))["e2ee_echo_ratio"]["met"] is False


def test_latest_md_shows_both_round_trips_and_the_ratio_row() -> None:
    results = _results(1.05)
    document = report_document(results, QUICK)

    lines = markdown(document).splitlines()

    assert any(line.startswith("| echo round trip, bot, encrypted room | 20 |") for line in lines)
    assert any(line.startswith("| echo round trip, bot, plain room") for line in lines)
    [ratio] = [line for line in lines if line.startswith("| e2ee echo ratio")]
    assert "| 1.050 | 1.250 |" in ratio and "<= 1.15x | yes |" in ratio


def test_the_chart_draws_the_encrypted_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = _results(1.05)
    results["e2ee_echo"]["samples"] = {"encrypted_ms": [100.0, 110.0], "plain_ms": [95.0, 99.0]}
    document = {
        "details": results,
        "machine": {"cpu": "test", "cores": 2},
        "run": {"preset": "quick", "date": "today"},
    }

    assert chart(document, tmp_path / "latest.png")
    assert (tmp_path / "latest.png").stat().st_size > 0


def test_the_concurrency_ratio_to_the_floor_is_a_headline_figure_with_its_row() -> None:
    results: dict[str, Any] = {
        "concurrency": {
            "rooms": 50,
            "bot_room_concurrency": 128,
            "all_replies_s": _summary(2.0, 2.2),
            "all_replies_from_first_send_s": _summary(2.5, 2.7),
            "user_send_burst_s": _summary(0.75, 0.8),
            "synapse_floor_s": 1.75,
            "beyond_floor_s": 0.25,
            "ratio_floor": 1.143,
            "samples_s": [2.0],
            "order": {
                "messages_per_room": 5,
                "all_replies_s": 6.0,
                "in_order": True,
                "messages": 250,
                "answered": 250,
                "duplicates": 0,
                "rooms_out_of_order": 0,
            },
            "variant": None,
        }
    }
    document = report_document(results, QUICK)

    assert document["goals"]["concurrency_ratio_floor"] == {
        "value": 1.143,
        "goal": "<= 1.15x",
        "met": True,
    }
    [row] = [line for line in markdown(document).splitlines() if "bot / floor" in line]
    assert "| 1.143 |" in row and "<= 1.15x | yes |" in row


def test_request_endpoints_name_ids_as_placeholders() -> None:
    from benchmarks.requests import endpoint

    receipt = {"method": "POST", "path": "/_matrix/client/v3/rooms/!a:b/receipt/m.read/$e1"}
    send = {"method": "PUT", "path": "/_matrix/client/v3/rooms/!a:b/send/m.room.message/t1"}

    assert endpoint(receipt) == "POST /v3/rooms/{room}/receipt/m.read/{event}"
    assert endpoint(send) == "PUT /v3/rooms/{room}/send/{type}/{txn}"


def test_restarts_run_at_the_largest_reconcile_size_up_to_restart_rooms() -> None:
    full = BenchConfig()
    assert (full.reconcile_sizes, full.restart_rooms) == ((100, 1000, 10000), 1000)
    assert full.restart_size == 1000
    assert replace(full, reconcile_sizes=(100, 500, 2000)).restart_size == 500
    assert replace(full, reconcile_sizes=(2000, 5000)).restart_size == 2000
    assert QUICK.restart_size == 100


def test_memory_is_a_headline_figure_at_every_reconcile_size() -> None:
    config = replace(BenchConfig(), reconcile_sizes=(1000, 10000))
    memory = {
        "idle_no_rooms": 77.0,
        "ready_1000": 101.5,
        "after_restarts_1000": 96.0,
        "peak_1000_vmhwm": 120.0,
        "ready_10000": 230.4,
    }
    h = headline({"memory": memory}, config)
    assert (h["rss_mb_1000"], h["rss_mb_10000"], h["rss_mb_idle"]) == (101.5, 230.4, 77.0)
    assert goals(h)["rss_mb_1000"]["met"] and not goals(h)["rss_mb_10000"]["met"]
