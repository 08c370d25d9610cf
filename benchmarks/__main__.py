"""`uv run python -m benchmarks [--quick] [--flags]`: run every scenario, write the results.

One fresh Synapse (temp dir, free loopback port) serves the whole run. Results go to
``<out-dir>/latest.json``, ``latest.md`` and ``latest.png`` (see benchmarks/README.md).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks.config import BenchConfig, load_config
from benchmarks.context import BenchContext, say
from benchmarks.machine import machine_info, versions
from runtime.dev.homeserver import HomeserverConfig, LocalHomeserver


async def run_all(ctx: BenchContext, config: BenchConfig) -> dict[str, Any]:
    from benchmarks.concurrency import run_concurrency
    from benchmarks.e2ee import run_e2ee_echo
    from benchmarks.echo import run_echo
    from benchmarks.reconcile import run_reconcile_and_restart

    results: dict[str, Any] = {}
    try:
        if "echo" in config.scenarios:
            results["echo"] = await run_echo(ctx, config)
        if "e2ee" in config.scenarios:
            results["e2ee_echo"] = await run_e2ee_echo(ctx, config)
        if "concurrency" in config.scenarios:
            results["concurrency"] = await run_concurrency(ctx, config)
        if "reconcile" in config.scenarios or "restart" in config.scenarios:
            results.update(await run_reconcile_and_restart(ctx, config))
        if "throughput" in config.scenarios or "soak" in config.scenarios:
            from benchmarks.load import run_load

            results.update(await run_load(ctx, config))
    finally:
        await ctx.close()
    return results


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import loadavg, write_results

    config = load_config(argv)
    workdir = Path(tempfile.mkdtemp(prefix="lambda-bench-"))
    synapse_dir = synapse_data_dir(workdir, tmpfs=config.synapse_tmpfs)
    say(f"preset {config.preset}, scenarios {', '.join(config.scenarios)}; work dir {workdir}")
    started = time.monotonic()
    load_start = loadavg()
    ok = False
    try:
        synapse = LocalHomeserver(
            HomeserverConfig(data_dir=synapse_dir, port=0, overrides=SYNAPSE_OVERRIDES)
        )
        synapse_started = time.monotonic()
        with synapse:
            say(f"synapse up at {synapse.base_url} in {time.monotonic() - synapse_started:.1f}s")
            ctx = BenchContext(synapse=synapse, workdir=workdir)
            results = anyio.run(run_all, ctx, config)
        duration = time.monotonic() - started
        paths = write_results(
            results,
            config=config,
            machine=machine_info(),
            versions=versions(),
            duration_s=duration,
            load={"loadavg_start": load_start, "loadavg_end": loadavg()},
        )
        ok = True
        say(f"done in {duration:.0f}s: " + ", ".join(str(p) for p in paths))
    finally:
        if config.keep or not ok:
            say(f"kept {workdir} (logs of the bot, Synapse, proxy, platform-agent)")
            if synapse_dir.parent != workdir:
                say(f"Synapse's data is in {synapse_dir} (in memory: delete it when done)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(synapse_dir, ignore_errors=True)
    return 0


# Federation is off in the dev configuration; no federation sender either, so Synapse does
# not queue every new event for remote servers it will never contact (about 6 % of its
# CPU while the reconcile scenario creates rooms).
SYNAPSE_OVERRIDES: dict[str, Any] = {"federation_sender_instances": []}


def synapse_data_dir(workdir: Path, *, tmpfs: bool) -> Path:
    """Synapse's data dir: on /dev/shm when asked and available (linked from the work dir).

    Synapse's SQLite commits each of its many small transactions with an fsync; on a
    tmpfs they cost nothing, so creating 10,000 rooms is bounded by Synapse's CPU
    alone. The bot's own files stay in the work dir, on disk (its commits are its cost).
    """
    shm = Path("/dev/shm")
    if not tmpfs or not shm.is_dir():
        return workdir / "synapse"
    data_dir = Path(tempfile.mkdtemp(prefix="lambda-bench-synapse-", dir=shm))
    (workdir / "synapse").symlink_to(data_dir, target_is_directory=True)
    return data_dir


if __name__ == "__main__":
    sys.exit(main())
