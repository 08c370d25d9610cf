"""Writing a run's results: latest.json (everything), latest.md (the table), latest.png (charts)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.config import BenchConfig
from benchmarks.load_report import LOAD_GOALS, load_chart, load_headline, load_rows

# Issue 8's goals: (headline key, comparison, target, unit).
GOALS: dict[str, tuple[str, float, str]] = {
    "echo_ratio": ("<=", 1.10, "x"),
    "e2ee_echo_ratio": ("<=", 1.15, "x"),
    "concurrency_50_s": ("<=", 1.5, "s"),
    "concurrency_ratio_floor": ("<=", 1.15, "x"),  # issue 16
    "reconcile_ratio_1000": ("<=", 1.2, "x"),
    "reconcile_per_room_requests_1000": ("<=", 0, ""),
    "restart_beyond_synapse_s": ("<=", 0.5, "s"),  # issue 16 (was 2 s)
    "rss_mb_1000": ("<=", 150.0, "MiB"),
    "reconcile_ratio_10000": ("<=", 1.2, "x"),
    "reconcile_per_room_requests_10000": ("<=", 0, ""),
    "rss_mb_10000": ("<=", 200.0, "MiB"),
    **LOAD_GOALS,  # throughput and soak (benchmarks/load_report.py)
}


def headline(results: dict[str, Any], config: BenchConfig) -> dict[str, Any]:
    """The flat figures of issue 8 (medians where there are repeats)."""
    h: dict[str, Any] = {}
    if echo := results.get("echo"):
        h["echo_ratio"] = echo["ratio_p50"]
        h["echo_p50_ms"] = echo["bot_ms"]["median"]
        h["raw_echo_p50_ms"] = echo["raw_ms"]["median"]
        h["rss_mb_idle"] = echo["rss_mb"]["idle"]
    if e2ee := results.get("e2ee_echo"):
        h["e2ee_echo_ratio"] = e2ee["ratio_p50"]
        h["e2ee_echo_ratio_p95"] = e2ee["ratio_p95"]
        h["e2ee_echo_p50_ms"] = e2ee["encrypted_ms"]["median"]
        h["e2ee_plain_echo_p50_ms"] = e2ee["plain_ms"]["median"]
    if conc := results.get("concurrency"):
        h[f"concurrency_{conc['rooms']}_s"] = conc["all_replies_s"]["median"]
        h["concurrency_synapse_floor_s"] = conc["synapse_floor_s"]
        if "ratio_floor" in conc:
            h["concurrency_ratio_floor"] = conc["ratio_floor"]
        if variant := conc.get("variant"):
            limit = variant["bot_room_concurrency"]
            h[f"concurrency_{conc['rooms']}_limit{limit}_s"] = variant["all_replies_s"]["median"]
        h["concurrency_order_ok"] = conc["order"]["in_order"]
    if rec := results.get("reconcile"):
        for size, step in rec["sizes"].items():
            last = step["runs"][-1]["requests"]
            h[f"reconcile_ratio_{size}"] = step["ratio_p50"]
            same = [k for k in step if k.startswith("ratio_vs_timeline_")]
            if same:
                h[f"reconcile_{same[0].removesuffix('_p50')}_{size}"] = step[same[0]]
            h[f"reconcile_requests_{size}"] = last["total"]
            h[f"reconcile_per_room_requests_{size}"] = last["per_room"]
            for kind in ("intact", "intact_state_after"):
                if kind in step:
                    h[f"reconcile_{kind}_ratio_{size}"] = step[kind]["ratio_p50"]
    if restart := results.get("restart"):
        h["restart_first_reply_s"] = restart["first_reply_s"]["median"]
        h["restart_beyond_synapse_s"] = restart["beyond_synapse_s"]["median"]
    if memory := results.get("memory"):
        for size in config.reconcile_sizes:
            at_size = [
                v
                for k, v in memory.items()
                if k in (f"ready_{size}", f"after_restarts_{size}") and isinstance(v, float)
            ]
            if at_size:
                h[f"rss_mb_{size}"] = max(at_size)
        h.setdefault("rss_mb_idle", memory.get("idle_no_rooms"))
    h.update(load_headline(results))
    return h


def goals(h: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, (op, target, unit) in GOALS.items():
        value = h.get(key)
        if value is None:
            continue
        met = value >= target if op == ">=" else value <= target
        out[key] = {"value": value, "goal": f"{op} {target:g}{unit}", "met": met}
    return out


def write_results(
    results: dict[str, Any],
    *,
    config: BenchConfig,
    machine: dict[str, Any],
    versions: dict[str, Any],
    duration_s: float,
    load: dict[str, Any] | None = None,
) -> list[Path]:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    h = headline(results, config)
    document = {
        **h,
        "goals": goals(h),
        "machine": {**machine, **(load or {})},
        "versions": versions,
        "run": {
            "preset": config.preset,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "duration_s": round(duration_s, 1),
            "config": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in vars(config).items()
                if k not in {"out_dir"}
            },
        },
        "details": results,
    }
    json_path = config.out_dir / "latest.json"
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = config.out_dir / "latest.md"
    md_path.write_text(markdown(document), encoding="utf-8")
    paths = [json_path, md_path]
    png_path = config.out_dir / "latest.png"
    if chart(document, png_path):
        paths.append(png_path)
    load_png = config.out_dir / "latest-load.png"
    if load_chart(document, load_png):
        paths.append(load_png)
    from benchmarks.reconcile import scale_chart

    if scale_chart(document, config.out_dir / "latest-scale.png"):
        paths.append(config.out_dir / "latest-scale.png")
    return paths


def _row(name: str, s: dict[str, Any] | None, unit: str, goal: str = "", met: Any = "") -> str:
    if not s:
        return ""
    digits = 1 if unit == "ms" else 2

    def fmt(value: float) -> str:
        return f"{value:.{digits}f}"

    mark = {True: "yes", False: "**no**"}.get(met, "") if isinstance(met, bool) else met
    return (
        f"| {name} | {s['n']} | {fmt(s['min'])} | {fmt(s['median'])} | {fmt(s['p95'])} | "
        f"{fmt(s['max'])} | {unit} | {goal} | {mark} |"
    )


def _met(met: Any) -> str:
    return "yes" if met is True else "**no**" if met is False else ""


def markdown(doc: dict[str, Any]) -> str:
    d = doc["details"]
    g = doc["goals"]
    m = doc["machine"]
    v = doc["versions"]
    lines = [
        f"Run `{doc['run']['preset']}` on {doc['run']['date']} ({doc['run']['duration_s']:.0f} s); "
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('distro')}; "
        f"Python {v.get('python')}, Synapse {v.get('matrix-synapse')} (SQLite), "
        f"matrix-nio {v.get('matrix-nio')}; commit {v['lambda-surface']['commit']}"
        f"{' (dirty)' if v['lambda-surface']['dirty'] else ''}."
        + (
            f" Load average {m['loadavg_start']} at start, {m['loadavg_end']} at end."
            if "loadavg_start" in m
            else ""
        ),
        "",
        "| figure | n | min | median | p95 | max | unit | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def goal_of(key: str) -> tuple[str, Any]:
        entry = g.get(key)
        return (entry["goal"], entry["met"]) if entry else ("", "")

    if echo := d.get("echo"):
        goal, met = goal_of("echo_ratio")
        lines.append(_row("echo round trip, bot", echo["bot_ms"], "ms"))
        lines.append(_row("echo round trip, raw nio client", echo["raw_ms"], "ms"))
        lines.append(
            f"| echo ratio bot/raw (p50) | | | {echo['ratio_p50']:.3f} | | | x | {goal} | "
            f"{'yes' if met is True else '**no**' if met is False else ''} |"
        )
        cpu = echo.get("cpu_ms_per_message")
        if cpu:
            lines.append(
                f"| echo: CPU per message, bot / raw | | | {cpu['bot']:.1f} / {cpu['raw']:.1f} "
                "| | | ms | | |"
            )
    if e2ee := d.get("e2ee_echo"):
        goal, met = goal_of("e2ee_echo_ratio")
        lines.append(_row("echo round trip, bot, encrypted room", e2ee["encrypted_ms"], "ms"))
        lines.append(_row("echo round trip, bot, plain room (same run)", e2ee["plain_ms"], "ms"))
        lines.append(
            f"| e2ee echo ratio encrypted/plain (p50; p95) | | | {e2ee['ratio_p50']:.3f} | "
            f"{e2ee['ratio_p95']:.3f} | | x | {goal} | "
            f"{'yes' if met is True else '**no**' if met is False else ''} |"
        )
    if conc := d.get("concurrency"):
        goal, met = goal_of("concurrency_50_s")
        n = conc["rooms"]
        lines.append(
            _row(
                f"{n} rooms x 1 message, 1 s agent: all answered (room limit "
                f"{conc['bot_room_concurrency']}, the default)",
                conc["all_replies_s"],
                "s",
                goal,
                met,
            )
        )
        lines.append(
            _row("  same, from the first send", conc["all_replies_from_first_send_s"], "s")
        )
        lines.append(
            _row(f"  Synapse alone: {n} concurrent user sends", conc["user_send_burst_s"], "s")
        )
        lines.append(
            f"|  floor = agent 1 s + {n} sends; bot beyond it | | | {conc['synapse_floor_s']:.2f} "
            f"| | | s | | beyond: {conc['beyond_floor_s']:.2f} s |"
        )
        if "ratio_floor" in conc:
            goal, met = goal_of("concurrency_ratio_floor")
            lines.append(
                f"| {n} rooms: bot / floor (p50) | | | {conc['ratio_floor']:.3f} | | | x | "
                f"{goal} | {'yes' if met is True else '**no**' if met is False else ''} |"
            )
        if variant := conc.get("variant"):
            lines.append(
                _row(
                    f"  same with SURFACE_ROOM_CONCURRENCY={variant['bot_room_concurrency']}",
                    variant["all_replies_s"],
                    "s",
                )
            )
        o = conc["order"]
        lines.append(
            f"| per-room order, {o['messages_per_room']} messages x {n} rooms | 1 | | "
            f"{o['all_replies_s']:.2f} | | | s | in order, once each | "
            f"{'yes' if o['in_order'] else '**no**'} ({o['answered']}/{o['messages']} answered, "
            f"{o['duplicates']} duplicates, {o['rooms_out_of_order']} rooms out of order) |"
        )
    if rec := d.get("reconcile"):
        for size, step in rec["sizes"].items():
            goal, met = goal_of(f"reconcile_ratio_{size}")
            same = next(k for k in step if k.startswith("reference_sync_timeline_"))
            window = same.removeprefix("reference_sync_timeline_").removesuffix("_s")
            req = step["runs"][-1]["requests"]
            lines += [
                _row(f"reconcile {size}: bot start -> ready", step["bot_start_to_ready_s"], "s"),
                _row("  reference: full-state sync, timeline 0", step["reference_sync_s"], "s"),
                f"| reconcile {size}: ratio (p50) | | | {step['ratio_p50']:.2f} | | | x | {goal} | "
                f"{_met(met)} |",
                _row("  bot: process start -> first request", step["bot_startup_s"], "s"),
                _row(
                    "  bot: its full-state sync (at the proxy)", step["bot_full_state_sync_s"], "s"
                ),
                _row("  bot: sync done -> ready", step["bot_after_sync_to_ready_s"], "s"),
                _row(f"  full-state sync, timeline {window} (what the bot asks)", step[same], "s"),
                f"| reconcile {size}: requests to ready | 1 | | {req['total']} | | | requests | "
                f"no per-room | {_met(req['per_room'] == 0)} ({req['per_room']} per-room) |",
            ]
            for kind, label in (
                ("intact", "database intact"),
                ("intact_state_after", "database intact, MSC4222 on"),
            ):
                if intact := step.get(kind):
                    lines += [
                        _row(
                            f"reconcile {size}, {label}: start -> ready "
                            f"(timeline {intact['timeline_limit']})",
                            intact["bot_start_to_ready_s"],
                            "s",
                        ),
                        f"|   ratio to the timeline-0 sync (p50) | | | {intact['ratio_p50']:.2f} "
                        f"| | | x | | {intact['requests']} requests, "
                        f"{intact['per_room']} per-room |",
                    ]
    if restart := d.get("restart"):
        goal, met = goal_of("restart_beyond_synapse_s")
        lines.append(
            _row(f"restart to first reply, {restart['rooms']} rooms", restart["first_reply_s"], "s")
        )
        lines.append(_row("  of which Synapse busy", restart["synapse_busy_s"], "s"))
        lines.append(_row("  beyond Synapse", restart["beyond_synapse_s"], "s", goal, met))
    if memory := d.get("memory"):
        for key, value in memory.items():
            goal, met = goal_of(f"rss_mb_{key.rsplit('_', 1)[-1]}")
            label = key.replace("_", " ")
            lines.append(
                f"| bot RSS, {label} | 1 | | {value:.1f} | | | MiB | {goal} | "
                f"{'yes' if met is True else '**no**' if met is False else ''} |"
            )
    lines += load_rows(d, g)
    return "\n".join(line for line in lines if line) + "\n"


def chart(doc: dict[str, Any], path: Path) -> bool:
    """A 2x3 PNG of the figures; False (and no file) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    d = doc["details"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0][0]
    boxes: list[tuple[str, list[float]]] = []
    titles: list[str] = []
    if echo := d.get("echo"):
        boxes += [("bot", echo["samples"]["bot_ms"]), ("raw nio", echo["samples"]["raw_ms"])]
        titles.append(f"bot/raw p50 {echo['ratio_p50']:.2f}x (goal 1.10x)")
    if e2ee := d.get("e2ee_echo"):
        boxes += [
            ("bot, encrypted", e2ee["samples"]["encrypted_ms"]),
            ("bot, plain", e2ee["samples"]["plain_ms"]),
        ]
        titles.append(f"encrypted/plain p50 {e2ee['ratio_p50']:.2f}x (goal 1.15x)")
    if boxes:
        ax.boxplot([b for _, b in boxes], tick_labels=[n for n, _ in boxes], showfliers=True)
        ax.set_title("Echo round trip\n" + "; ".join(titles), fontsize=9)
        ax.set_ylabel("ms")
    ax = axes[0][1]
    if conc := d.get("concurrency"):
        series = [(f"limit {conc['bot_room_concurrency']} (default)", conc["samples_s"])]
        if variant := conc.get("variant"):
            series.append((f"limit {variant['bot_room_concurrency']}", variant["samples_s"]))
        width = 0.8 / len(series)
        for i, (label, samples) in enumerate(series):
            xs = [x + i * width for x in range(1, len(samples) + 1)]
            ax.bar(xs, samples, width=width, label=label)
        ax.axhline(1.5, color="tab:red", linestyle="--", label="goal 1.5 s")
        ax.axhline(
            conc["synapse_floor_s"], color="black", linestyle=":", label="1 s + Synapse sends"
        )
        ax.axhline(
            conc["synapse_floor_s"] * 1.15, color="tab:orange", linestyle="--", label="goal 1.15x"
        )
        ax.set_title(f"{conc['rooms']} rooms, 1 s agent: all answered")
        ax.set_xticks(range(1, len(conc["samples_s"]) + 1))
        ax.set_xlabel("burst")
        ax.set_ylabel("s")
        ax.legend(fontsize=8)
    ax = axes[0][2]
    if rec := d.get("reconcile"):
        sizes = list(rec["sizes"])
        steps = [rec["sizes"][size] for size in sizes]
        same_key = next(k for k in steps[0] if k.startswith("reference_sync_timeline_"))
        window = same_key.removeprefix("reference_sync_timeline_").removesuffix("_s")
        x = list(range(len(sizes)))
        startup = [s["bot_startup_s"]["median"] for s in steps]
        sync = [s["bot_full_state_sync_s"]["median"] for s in steps]
        rest = [
            max(0.0, s["bot_start_to_ready_s"]["median"] - a - b)
            for s, a, b in zip(steps, startup, sync, strict=True)
        ]
        w = 0.27
        left = [i - w for i in x]
        ax.bar(left, startup, w, label="bot: start -> 1st request", color="tab:orange")
        ax.bar(left, sync, w, bottom=startup, label="bot: its full-state sync", color="tab:blue")
        ax.bar(
            left,
            rest,
            w,
            bottom=[a + b for a, b in zip(startup, sync, strict=True)],
            label="bot: rest -> ready",
            color="tab:purple",
        )
        ax.bar(
            x,
            [s["reference_sync_s"]["median"] for s in steps],
            w,
            label="sync, timeline 0",
            color="tab:green",
        )
        ax.bar(
            [i + w for i in x],
            [s[same_key]["median"] for s in steps],
            w,
            label=f"sync, timeline {window}",
            color="tab:gray",
        )
        for i, s in zip(x, steps, strict=True):
            top = s["bot_start_to_ready_s"]["median"]
            ax.annotate(f"{s['ratio_p50']:.2f}x", (i - w, top), ha="center", va="bottom")
        ax.set_xticks(x, sizes)
        ax.set_title("Reconciliation, database deleted (p50)")
        ax.set_xlabel("chat rooms")
        ax.set_ylabel("s")
        ax.legend(fontsize=7)
    ax = axes[1][0]
    if restart := d.get("restart"):
        runs = restart["runs"]
        runs_x = list(range(1, len(runs) + 1))
        busy = [r["synapse_busy_s"] for r in runs]
        beyond = [r["beyond_synapse_s"] for r in runs]
        ax.bar(runs_x, busy, label="Synapse busy", color="tab:gray")
        ax.bar(runs_x, beyond, bottom=busy, label="beyond Synapse", color="tab:orange")
        ax.set_title(f"Restart to first reply, {restart['rooms']} rooms")
        ax.set_xticks(runs_x)
        ax.set_xlabel("restart")
        ax.set_ylabel("s")
        ax.legend()
    ax = axes[1][1]
    if memory := d.get("memory"):
        labels = list(memory)
        ax.bar(range(len(labels)), [memory[k] for k in labels], color="tab:green")
        ax.set_xticks(range(len(labels)), [k.replace("_", "\n") for k in labels], fontsize=8)
        ax.axhline(150, color="tab:red", linestyle="--", label="goal 150 MiB")
        ax.set_title("Bot RSS")
        ax.set_ylabel("MiB")
        ax.legend()
    ax = axes[1][2]
    if rec := d.get("reconcile"):
        sizes = list(rec["sizes"])
        totals = [rec["sizes"][s]["runs"][-1]["requests"]["total"] for s in sizes]
        per_room = [rec["sizes"][s]["runs"][-1]["requests"]["per_room"] for s in sizes]
        size_x = list(range(len(sizes)))
        ax.bar(size_x, totals, label="all", color="tab:blue")
        ax.bar(size_x, per_room, label="per-room", color="tab:red")
        ax.set_xticks(size_x, sizes)
        ax.set_title("Bot HTTP requests, start -> ready")
        ax.set_xlabel("chat rooms")
        ax.legend()
    for row in axes:
        for a in row:
            if not a.has_data():
                a.set_visible(False)
    m = doc["machine"]
    fig.suptitle(
        f"lambda-surface benchmarks ({doc['run']['preset']}, {doc['run']['date']}; "
        f"{m.get('cores')} cores, {m.get('cpu')})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
