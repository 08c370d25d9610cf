"""Benchmark sizes: the issue's full sizes, a `--quick` preset, and overrides.

Precedence: command-line flag > environment variable (BENCH_<FIELD>, e.g.
BENCH_ECHO_MESSAGES=50, BENCH_RECONCILE_SIZES=100,500) > preset.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

SCENARIOS = ("echo", "e2ee", "concurrency", "reconcile", "restart", "throughput", "soak")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "full"
    echo_messages: int = 200
    echo_warmup: int = 5
    echo_gap_s: float = 0.1
    concurrency_rooms: int = 50
    concurrency_repeats: int = 5
    order_messages: int = 5
    agent_delay_s: float = 1.0
    reconcile_sizes: tuple[int, ...] = (100, 1000, 10000)
    reconcile_repeats: int = 3
    restart_repeats: int = 3
    restart_rooms: int = 1000
    rooms_per_owner: int = 20
    create_concurrency: int = 16
    # Synapse's data dir on /dev/shm (benchmarks/__main__.py: synapse_data_dir).
    synapse_tmpfs: bool = True
    scenarios: tuple[str, ...] = SCENARIOS
    concurrency_variant_limit: int = 0
    out_dir: Path = RESULTS_DIR
    keep: bool = False
    # Route the echo and concurrency bots through the counting proxy too, and break
    # their turns down by request (diagnosis; the proxy adds ~1 ms per request).
    trace: bool = False
    # Throughput and soak (benchmarks/load.py, throughput.py, soak.py).
    throughput_rooms: int = 100
    throughput_senders: int = 4
    throughput_step_s: float = 10.0
    throughput_start_rate: float = 2.0
    throughput_max_rate: float = 512.0
    throughput_refine: int = 3
    soak_s: float = 600.0
    soak_rate: float = 0.0  # 0: half the bot's held rate from this run's throughput
    soak_sample_s: float = 5.0

    @property
    def max_rooms(self) -> int:
        return max(self.reconcile_sizes)

    @property
    def restart_size(self) -> int:
        """The reconcile size the restarts run at: the largest up to `restart_rooms`."""
        fitting = [size for size in self.reconcile_sizes if size <= self.restart_rooms]
        return max(fitting) if fitting else min(self.reconcile_sizes)


QUICK = BenchConfig(
    preset="quick",
    echo_messages=20,
    echo_warmup=3,
    concurrency_rooms=50,
    concurrency_repeats=2,
    order_messages=5,
    reconcile_sizes=(100,),
    reconcile_repeats=2,
    restart_repeats=2,
    restart_rooms=100,
    concurrency_variant_limit=0,
    throughput_rooms=20,
    throughput_step_s=5.0,
    throughput_refine=1,
    soak_s=60.0,
    soak_sample_s=2.0,
)


def _parse(name: str, raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, Path):
        return Path(raw)
    if isinstance(current, tuple):
        items = [item.strip() for item in raw.split(",") if item.strip()]
        if name == "reconcile_sizes":
            return tuple(sorted(int(item) for item in items))
        unknown = set(items) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
        return tuple(s for s in SCENARIOS if s in items)
    return raw


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Bot benchmarks against a fresh local Synapse (see benchmarks/README.md).",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, finishes in ~3 minutes")
    for f in fields(BenchConfig):
        if f.name in {"preset", "keep", "trace"}:
            continue
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper())
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    p.add_argument("--trace", action="store_true", help="route every bot through the proxy")
    return p


def load_config(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> BenchConfig:
    """Preset, then BENCH_* environment variables, then flags. Raises SystemExit on bad values."""
    env = os.environ if env is None else env
    p = parser()
    args = p.parse_args(argv)
    quick = args.quick or env.get("BENCH_QUICK", "").lower() in {"1", "true", "yes"}
    config = QUICK if quick else BenchConfig()
    changes: dict[str, Any] = {}
    for f in fields(BenchConfig):
        if f.name == "preset":
            continue
        raw = env.get("BENCH_" + f.name.upper())
        flag = getattr(args, f.name, None)
        if f.name in {"keep", "trace"}:
            flag = "1" if getattr(args, f.name) else None
        value = flag if flag is not None else raw
        if value is None:
            continue
        try:
            changes[f.name] = _parse(f.name, str(value), getattr(config, f.name))
        except ValueError as exc:
            p.error(f"{f.name}: {exc}")
    return replace(config, **changes)
