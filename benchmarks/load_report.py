"""The throughput and soak figures in the results: headline keys, table rows, their chart.

Called from benchmarks/report.py; the chart is a file of its own (`latest-load.png`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# (comparison, target, unit), as report.GOALS.
LOAD_GOALS: dict[str, tuple[str, float, str]] = {
    "throughput_ratio": (">=", 0.9, "x"),
    "soak_lost": ("<=", 0, ""),
    "soak_duplicated": ("<=", 0, ""),
    "soak_rss_growth_pct": ("<=", 5.0, "%"),
    "soak_error_lines": ("<=", 0, ""),
}


def load_headline(results: dict[str, Any]) -> dict[str, Any]:
    h: dict[str, Any] = {}
    if tp := results.get("throughput"):
        h["throughput_msgs_s"] = tp["bot"]["held_msgs_s"]
        if "raw" in tp:
            h["raw_throughput_msgs_s"] = tp["raw"]["held_msgs_s"]
        if "ratio" in tp:
            h["throughput_ratio"] = tp["ratio"]
    if soak := results.get("soak"):
        h["soak_rate_msgs_s"] = soak["rate"]
        h["soak_messages"] = soak["sent"]
        h["soak_lost"] = soak["lost"]
        h["soak_duplicated"] = soak["duplicated"]
        h["soak_p99_ms"] = soak["p99_ms"]
        h["soak_rss_growth_pct"] = soak["rss"]["growth_pct"]
        h["soak_error_lines"] = soak["error_lines"]
    return h


def _mark(entry: dict[str, Any] | None) -> tuple[str, str]:
    if not entry:
        return "", ""
    return entry["goal"], "yes" if entry["met"] else "**no**"


def _steps_row(name: str, steps: list[dict[str, Any]]) -> str:
    rates = " / ".join(f"{s['rate']:g}" for s in steps)
    p99 = " / ".join(
        "-" if s["p99_ms"] is None else f"{s['p99_ms']:.0f}" + ("" if s["held"] else "!")
        for s in steps
    )
    return f"|   {name} p99 at {rates} msgs/s (! = not held) | | | {p99} | | | ms | | |"


def load_rows(details: dict[str, Any], goals: dict[str, Any]) -> list[str]:
    """The table rows of the throughput and soak scenarios (none when they did not run)."""
    lines: list[str] = []
    if tp := details.get("throughput"):
        rooms = tp["rooms"]
        for side, label in (("bot", "bot"), ("raw", "raw nio client")):
            if side not in tp:
                continue
            s = tp[side]
            capped = " (the cap)" if s["capped"] else ""
            lines.append(
                f"| throughput, {label}: highest rate held, {rooms} rooms (p99 <= 1 s, each "
                f"answered once) | {len(s['steps'])} | | {s['held_msgs_s']:g}{capped} | | | "
                "msgs/s | | |"
            )
            lines.append(_steps_row(side, s["steps"]))
        if "ratio" in tp:
            goal, met = _mark(goals.get("throughput_ratio"))
            lines.append(
                f"| throughput ratio bot/raw | | | {tp['ratio']:.2f} | | | x | {goal} | {met} |"
            )
    if soak := details.get("soak"):
        ok = soak["lost"] == 0 and soak["duplicated"] == 0
        lines.append(
            f"| soak, {soak['rate']:g} msgs/s ({soak['rate_source']}) for {soak['duration_s']:g} "
            f"s: answered exactly once | {soak['sent']} | | {soak['answered']} | | | messages | "
            f"0 lost, 0 duplicated | {'yes' if ok else '**no**'} ({soak['lost']} lost, "
            f"{soak['duplicated']} duplicated) |"
        )
        if lat := soak.get("latency_ms"):
            lines.append(
                f"|   soak round trip | {lat['n']} | {lat['min']:.1f} | {lat['median']:.1f} | "
                f"{lat['p95']:.1f} | {lat['max']:.1f} | ms | | p99 {soak['p99_ms']:.1f} ms |"
            )
        rss = soak["rss"]
        goal, met = _mark(goals.get("soak_rss_growth_pct"))
        lines.append(
            f"| soak: bot RSS growth after warm-up | | | {rss['growth_pct']:+.2f} | | | % | "
            f"{goal} | {met} ({rss['first_window_mb']:.1f} -> {rss['last_window_mb']:.1f} MiB, "
            f"peak {soak['peak_rss_mb']:.1f}) |"
        )
        goal, met = _mark(goals.get("soak_error_lines"))
        lines.append(
            f"| soak: error lines in the bot's log | 1 | | {soak['error_lines']} | | | lines | "
            f"{goal} | {met} |"
        )
    return lines


def load_chart(doc: dict[str, Any], path: Path) -> bool:
    """Latency vs offered rate and RSS over the soak; False (no file) without data or matplotlib."""
    d = doc["details"]
    tp, soak = d.get("throughput"), d.get("soak")
    if not tp and not soak:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import ScalarFormatter
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    if tp:
        colors = {"bot": "tab:blue", "raw": "tab:gray"}
        for side in ("bot", "raw"):
            if side not in tp:
                continue
            steps = [s for s in tp[side]["steps"] if s["p99_ms"] is not None]
            # A retried rate: the line goes through its better attempt, the other is a dot.
            best: dict[float, dict[str, Any]] = {}
            for s in steps:
                if s["rate"] not in best or s["p99_ms"] < best[s["rate"]]["p99_ms"]:
                    best[s["rate"]] = s
            line = [best[rate] for rate in sorted(best)]
            rates = [s["rate"] for s in line]
            held = tp[side]["held_msgs_s"]
            left.plot(
                rates,
                [s["p99_ms"] for s in line],
                "o-",
                color=colors[side],
                label=f"{side} p99 (holds {held:g}/s)",
            )
            left.plot(
                rates, [s["p50_ms"] for s in line], "x--", color=colors[side], label=f"{side} p50"
            )
            others = [s for s in steps if best[s["rate"]] is not s]
            if others:
                left.plot(
                    [s["rate"] for s in others],
                    [s["p99_ms"] for s in others],
                    "o",
                    color=colors[side],
                    alpha=0.35,
                    label=f"{side} p99, other attempt",
                )
        left.axhline(1000, color="tab:red", linestyle=":", label="p99 limit 1 s")
        left.set_xscale("log", base=2)
        left.set_yscale("log")
        left.xaxis.set_major_formatter(ScalarFormatter())
        left.yaxis.set_major_formatter(ScalarFormatter())
        left.set_xlabel("offered rate, msgs/s")
        left.set_ylabel("round trip, ms")
        ratio = f"; bot/raw {tp['ratio']:.2f}x (goal 0.9x)" if "ratio" in tp else ""
        left.set_title(f"Open-loop throughput, {tp['rooms']} rooms{ratio}", fontsize=10)
        left.legend(fontsize=8)
    if soak:
        samples = soak["rss_samples"]
        rss = soak["rss"]
        right.plot([t for t, _ in samples], [mb for _, mb in samples], color="tab:green")
        (w1, w2) = rss["window_s"]
        right.axvspan(0, w1[0], color="0.9", label="warm-up")
        right.axvspan(w1[0], w1[1], color="tab:olive", alpha=0.2, label="first window")
        right.axvspan(w2[0], w2[1], color="tab:orange", alpha=0.2, label="last window")
        right.set_xlabel("s since the soak began")
        right.set_ylabel("bot VmRSS, MiB")
        right.set_title(
            f"Soak at {soak['rate']:g} msgs/s: RSS {rss['growth_pct']:+.2f}% (goal <= 5%), "
            f"{soak['lost']} lost, {soak['error_lines']} error lines",
            fontsize=10,
        )
        right.legend(fontsize=8)
    for ax in (left, right):
        if not ax.has_data():
            ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
