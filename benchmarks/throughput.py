"""Throughput: the highest open-loop message rate the bot holds, beside the raw nio echo client.

On the load rig (benchmarks/load.py: N rooms per side, instant echo agent, several
sender sessions, evenly spaced open-loop sends), each side is stepped through rates:
doubling from `throughput_start_rate` until a step is not held, then
`throughput_refine` bisections between the highest held and the lowest failed rate.
A step is held when every message is answered exactly once and the p99 round trip is
within 1 s (`Tally.held`). A step that is not held is run once more at the same rate
before the rate counts as failed, so one hiccup of a shared machine does not end the
climb. The two sides take turns step by step, so both see the same drift of the
machine. `throughput_msgs_s` = the bot's highest held rate, `raw_throughput_msgs_s`
the raw client's, `throughput_ratio` = bot / raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.config import BenchConfig
from benchmarks.context import say
from benchmarks.load import LoadRig
from benchmarks.soak import error_lines

WARM_UP_RATE = 5.0  # msgs/s of the warm-up (one message per room; below the held rates)


@dataclass
class RateSteps:
    """Which rate to try next, from the outcomes so far (pure; see the module docstring)."""

    start: float
    max_rate: float
    refinements: int
    factor: float = 2.0
    retries: int = 1
    held: float = 0.0  # highest rate held so far
    failed: float | None = None  # lowest rate failed (after its retries)
    capped: bool = False  # held at max_rate: the climb stopped there, not at a failure
    _next: float | None = None
    _fails_here: int = 0
    history: list[tuple[float, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start <= 0 or self.max_rate < self.start:
            raise ValueError("need 0 < start <= max_rate")
        self._next = self.start

    def next_rate(self) -> float | None:
        """The rate to run next, or None when done."""
        return self._next

    def record(self, rate: float, held: bool) -> None:
        """The outcome of a step at `rate` (the rate `next_rate` named)."""
        self.history.append((rate, held))
        if not held:
            self._fails_here += 1
            if self._fails_here <= self.retries:
                self._next = rate  # once more before it counts
                return
            self.failed = rate if self.failed is None else min(self.failed, rate)
        else:
            self.held = max(self.held, rate)
        self._fails_here = 0
        if self.failed is None:
            up = rate * self.factor
            if up > self.max_rate:
                self.capped = True
                self._next = None
            else:
                self._next = up
            return
        if self.refinements <= 0:
            self._next = None
            return
        self.refinements -= 1
        middle = _round_rate((self.held + self.failed) / 2)
        self._next = middle if self.held < middle < self.failed else None


def _round_rate(rate: float) -> float:
    """Rates to a tenth of a message per second (they are labels in the table)."""
    return round(rate, 1)


async def run_throughput(rig: LoadRig, config: BenchConfig) -> dict[str, Any]:
    sides = list(rig.sides)
    log_offset = len(rig.bot.log_text())
    for name in sides:
        await rig.warm_up(name, max(WARM_UP_RATE, config.throughput_start_rate))
    steppers = {
        name: RateSteps(
            start=config.throughput_start_rate,
            max_rate=config.throughput_max_rate,
            refinements=config.throughput_refine,
        )
        for name in sides
    }
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    while any(s.next_rate() is not None for s in steppers.values()):
        for name in sides:
            rate = steppers[name].next_rate()
            if rate is None:
                continue
            step = await rig.run_step(
                name, rate, config.throughput_step_s, "throughput", samples=True
            )
            steps[name].append(step)
            steppers[name].record(rate, bool(step["held"]))
    out: dict[str, Any] = {"rooms": len(rig.sides["bot"].rooms), "senders": len(rig.senders)}
    for name in sides:
        s = steppers[name]
        out[name] = {
            "held_msgs_s": s.held,
            "failed_msgs_s": s.failed,
            "capped": s.capped,
            "steps": steps[name],
        }
    out["bot_error_lines"] = len(error_lines(rig.bot.log_text()[log_offset:]))
    raw_held = out.get("raw", {}).get("held_msgs_s")
    if raw_held:
        out["ratio"] = round(out["bot"]["held_msgs_s"] / raw_held, 3)
    say(
        f"throughput: bot holds {out['bot']['held_msgs_s']:g} msg/s"
        + (f", raw {raw_held:g} msg/s, ratio {out['ratio']:.2f}" if raw_held else "")
    )
    return out
