"""Soak: a steady open-loop load on the bot for minutes; lost, duplicated, memory, error lines.

On the load rig (benchmarks/load.py), the bot is restarted first (same database and
rooms), so its memory starts from a fresh process, then takes `soak_rate` messages
per second (default: half the rate it held in this run's throughput scenario) for
`soak_s` seconds, evenly spaced over its rooms. Every message must be answered exactly
once (`REPLY_TO_FIELD`). The bot's `VmRSS` is read from /proc every `soak_sample_s`
seconds. Growth: the first `WARM_UP_FRACTION` of the soak is warm-up and not judged;
`soak_rss_growth_pct` compares the median of the last `WINDOW_FRACTION` of the soak
with the median of the first window of the same length after the warm-up. Error lines:
the bot's JSON log lines at level error or critical (and any raw `Traceback` line)
written during the soak.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import anyio

from benchmarks.config import BenchConfig
from benchmarks.context import say
from benchmarks.load import LoadRig

WARM_UP_FRACTION = 0.2
WINDOW_FRACTION = 0.2
FALLBACK_RATE = 4.0  # msgs/s when neither --soak-rate nor a throughput result is there
ERROR_LEVELS = frozenset({"error", "critical", "exception", "fatal"})


def soak_rate(configured: float, held: float | None) -> tuple[float, str]:
    """The rate to soak at and where it came from (pure)."""
    if configured > 0:
        return configured, "flag"
    if held:
        return max(0.5, round(held / 2, 1)), "half the held rate"
    return FALLBACK_RATE, "fallback (no throughput result)"


def rss_growth(
    samples: Sequence[tuple[float, float]],
    duration_s: float,
    warm_up: float = WARM_UP_FRACTION,
    window: float = WINDOW_FRACTION,
) -> dict[str, Any]:
    """Growth of (seconds since start, MiB) samples after warm-up, in % (pure).

    Compares the median of the last window with the median of the first window after
    the warm-up; each window is `window` x `duration_s` long. Raises ValueError when a
    window holds no sample.
    """
    first_from = warm_up * duration_s
    first_to = first_from + window * duration_s
    last_from = duration_s - window * duration_s
    first = [mb for t, mb in samples if first_from <= t < first_to]
    last = [mb for t, mb in samples if last_from <= t <= duration_s]
    if not first or not last:
        raise ValueError("a growth window holds no sample: sample more often")
    before, after = statistics.median(first), statistics.median(last)
    return {
        "first_window_mb": round(before, 1),
        "last_window_mb": round(after, 1),
        "growth_pct": round((after - before) / before * 100, 2),
        "window_s": [
            [round(first_from, 1), round(first_to, 1)],
            [round(last_from, 1), round(duration_s, 1)],
        ],
    }


def error_lines(log: str) -> list[str]:
    """The error-level lines of a JSON-lines log (and raw traceback starts) (pure)."""
    found = []
    for line in log.splitlines():
        text = line.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            if text.startswith("Traceback"):
                found.append(text)
            continue
        if isinstance(record, dict) and str(record.get("level", "")).lower() in ERROR_LEVELS:
            found.append(text)
    return found


async def run_soak(rig: LoadRig, config: BenchConfig, held: float | None) -> dict[str, Any]:
    rate, source = soak_rate(config.soak_rate, held)
    duration = config.soak_s
    bot = rig.bot
    await bot.stop_async()
    log_offset = len(bot.log_text())
    await bot.start_ready()
    rooms = len(rig.sides["bot"].rooms)
    say(f"soak: {rate:g} msg/s ({source}) for {duration:g}s over {rooms} rooms")
    samples: list[tuple[float, float]] = []
    started = time.monotonic()

    async def sample_rss() -> None:
        while True:
            samples.append((time.monotonic() - started, bot.rss_mb()))
            await anyio.sleep(config.soak_sample_s)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sample_rss)
        step = await rig.run_step("bot", rate, duration, "soak")
        tg.cancel_scope.cancel()
    # The sending span is judged (samples taken during the drain after it are not).
    growth = rss_growth(samples, duration)
    errors = error_lines(bot.log_text()[log_offset:])
    say(
        f"soak: {step['answered']}/{step['sent']} answered, lost {step['lost']}, "
        f"dup {step['duplicated']}, RSS {growth['first_window_mb']} -> "
        f"{growth['last_window_mb']} MiB ({growth['growth_pct']:+.2f}%), "
        f"{len(errors)} error lines"
    )
    return {
        **step,
        "rate": rate,
        "rate_source": source,
        "duration_s": duration,
        "sending_s": step["duration_s"],
        "rss": growth,
        "rss_samples": [[round(t, 1), round(mb, 2)] for t, mb in samples],
        "peak_rss_mb": round(bot.peak_rss_mb(), 1),
        "error_lines": len(errors),
        "error_samples": errors[:5],
    }
