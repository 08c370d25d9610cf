"""Reconciliation scale, restart to first reply, and memory, on one bot account.

Reconciliation: the bot's account gets 100, then 500, then 1000 chat rooms (created
incrementally by benchmarks/bulk.py, as the bot creates them), and for each size the
database is deleted (the nio store with the device session is kept) and the bot is
started; start -> /ready is compared, in alternation, with one timeline-limit-0
full-state `/sync` of the same account (another device). Both go through their own
instance of the counting proxy (benchmarks/proxy.py), so both pay the same small
proxy cost and every request the bot makes is counted and timed.

Restart: with the database intact (the last reconciliation left it so), the bot is
SIGTERMed, the user sends a message while it is down, the bot is started, and the
time from start to the arrival of the complete answer is measured. "Beyond Synapse"
subtracts the time during which one of the bot's requests (other than a long poll)
was in flight at Synapse: what remains is the bot's own start-up and work plus the
delivery of the answer to the user.

Memory: VmRSS (and VmHWM, the peak) of the bot process idle with no rooms, at ready
after each reconciliation, and after the restarts with the largest size.

MSC4222: at each size, after the runs with the database deleted, starts with it intact,
first as Synapse is configured (the bot asks its state window, 10 events), then with
Synapse's per-user experimental feature `msc4222` on for the bot's account (admin API):
the bot learns from one answer that `state_after` comes back and then asks a timeline
of 0. Both against the same timeline-0 reference. With the database deleted the bot
asks its catch-up window either way (tasks/reconcile.py), so those runs are not repeated.

`scale_chart` draws time and memory against rooms (latest-scale.png).
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx

from benchmarks.bulk import BulkRooms
from benchmarks.config import BenchConfig
from benchmarks.context import BenchContext, say
from benchmarks.observer import Observer, answers
from benchmarks.processes import BenchBot, start_proxy
from benchmarks.proxy import read_log
from benchmarks.requests import between, busy_seconds, summary
from benchmarks.stats import summarize
from runtime.dev.accounts import RegisteredUser
from runtime.dev.user import onboard
from runtime.matrix.snapshot import STATE_AFTER_FILE
from runtime.matrix.sync_query import sync_filter
from tasks.reconcile import CATCH_UP_WINDOW

REPLY_TIMEOUT_S = 600.0


class ReferenceSync:
    """One full-state /sync of the bot's account, timed at the client.

    By default a timeline-limit-0 filter: the issue's reference. The bot asks for
    CATCH_UP_WINDOW events per room with its own filter when its database is gone
    (tasks/reconcile.py, runtime/matrix/sync_query.py); `filter_text` measures that sync
    too, to tell Synapse's extra work from the bot's own.
    """

    def __init__(self, base_url: str, user: RegisteredUser, filter_text: str | None = None) -> None:
        self._base_url = base_url
        self._token = user.access_token
        self._filter = filter_text or json.dumps(
            {"room": {"timeline": {"limit": 0}}}, separators=(",", ":")
        )
        self._n = 0

    async def once(self) -> dict[str, Any]:
        # A new `timeout` each time: Synapse caches /sync answers for two minutes keyed on
        # the query, and ignores the timeout itself for a full-state sync.
        self._n += 1
        params = {"full_state": "true", "timeout": str(self._n), "filter": self._filter}
        async with httpx.AsyncClient(timeout=600.0, trust_env=False) as http:
            started = time.monotonic()
            response = await http.get(
                self._base_url + "/_matrix/client/v3/sync",
                params=params,
                headers={"Authorization": f"Bearer {self._token}"},
            )
            received = time.monotonic()
        response.raise_for_status()
        body = response.json()
        parsed = time.monotonic()
        return {
            "seconds": received - started,
            "parse_seconds": parsed - received,
            "bytes": len(response.content),
            "joined_rooms": len(body.get("rooms", {}).get("join", {})),
        }


def _log_events(bot: BenchBot, offset: int, name: str) -> list[dict[str, Any]]:
    text = bot.log_text()[offset:]
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


async def run_reconcile_and_restart(ctx: BenchContext, config: BenchConfig) -> dict[str, Any]:
    workdir = ctx.dir("reconcile")
    bot_user = await ctx.register_async("recon-bot")
    localpart = bot_user.user_id[1:].split(":", 1)[0]
    # The same account on another device, for the reference sync.
    ref_device = await anyio.to_thread.run_sync(
        ctx.synapse.register_user, localpart, bot_user.password
    )
    user = await ctx.register_async("restart-user")
    admin = await anyio.to_thread.run_sync(
        lambda: ctx.synapse.register_user("bench-admin", "bench-admin-password", admin=True)
    )
    bot_proxy, bot_proxy_url = await start_proxy(
        ctx.base_url, workdir / "bot-requests.jsonl", workdir
    )
    ref_proxy, ref_proxy_url = await start_proxy(
        ctx.base_url, workdir / "ref-requests.jsonl", workdir
    )
    bot_log = workdir / "bot-requests.jsonl"
    bot = BenchBot(ctx.synapse, bot_user, workdir / "bot", homeserver_url=bot_proxy_url)
    reference = ReferenceSync(ref_proxy_url, ref_device)
    same_as_bot = ReferenceSync(
        ref_proxy_url, ref_device, sync_filter(CATCH_UP_WINDOW, snapshot=True)
    )
    bulk: BulkRooms | None = None
    out: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    try:
        await bot.start_ready()
        await anyio.sleep(1.0)
        memory["idle_no_rooms"] = round(bot.rss_mb(), 1)
        client = await ctx.login(user)
        _, chat_room = await onboard(client, bot_user.user_id)
        await bot.stop_async()

        bulk = await BulkRooms.open(
            homeserver=ctx.base_url,
            bot=bot_user,
            # The bot's own store (it is stopped): the same device and cross-signing
            # identity, so the bulk session does not replace the bot's identity.
            store_path=bot.store_path,
            register=ctx.register,
            rooms_per_owner=config.rooms_per_owner,
            concurrency=config.create_concurrency,
        )
        steps: dict[str, Any] = {}
        for size in config.reconcile_sizes:
            seconds = await bulk.ensure(size)
            say(
                f"reconcile: {bulk.chat_rooms} chat rooms in {bulk.spaces} Spaces "
                f"(+{seconds:.0f}s creating)"
            )
            # Warm Synapse's caches for the new rooms, for each kind of request.
            await reference.once()
            await same_as_bot.once()
            await _fresh_start(bot, bot_log)
            await bot.stop_async()
            bot_runs: list[dict[str, Any]] = []
            ref_runs: list[dict[str, Any]] = []
            same_runs: list[dict[str, Any]] = []
            repeats = config.reconcile_repeats
            for _ in range(repeats):
                ref_runs.append(await reference.once())
                bot_runs.append(await _fresh_start(bot, bot_log))
                await bot.stop_async()
                same_runs.append(await same_as_bot.once())
            expected = bulk.chat_rooms + 1  # and the restart user's own chat
            for run in bot_runs:
                if run["restored"]["chats_restored"] != expected or run["conflicts"]:
                    raise RuntimeError(
                        f"reconcile restored {run['restored']} with {run['conflicts']} conflicts, "
                        f"expected {expected} chats and none: the benchmark's rooms are not "
                        "what the bot creates (see the bot log's reconcile.done)"
                    )
            bot_s = summarize([r["start_to_ready_s"] for r in bot_runs])
            ref_s = summarize([r["seconds"] for r in ref_runs])
            same_s = summarize([r["seconds"] for r in same_runs])
            ratio = bot_s.median / ref_s.median
            steps[str(size)] = {
                "chat_rooms": bulk.chat_rooms,
                "spaces": bulk.spaces,
                "bot_start_to_ready_s": bot_s.as_dict(),
                "reference_sync_s": ref_s.as_dict(),
                "ratio_p50": round(ratio, 3),
                f"reference_sync_timeline_{CATCH_UP_WINDOW}_s": same_s.as_dict(),
                f"ratio_vs_timeline_{CATCH_UP_WINDOW}_p50": round(bot_s.median / same_s.median, 3),
                "bot_startup_s": summarize(
                    [r["process_start_to_first_request_s"] for r in bot_runs]
                ).as_dict(),
                "bot_full_state_sync_s": summarize(
                    [r["requests"]["full_state_sync_s"] or 0.0 for r in bot_runs]
                ).as_dict(),
                "bot_after_sync_to_ready_s": summarize(
                    [r["after_sync_to_ready_s"] for r in bot_runs]
                ).as_dict(),
                "reference_bytes": ref_runs[-1]["bytes"],
                "reference_parse_s": round(ref_runs[-1]["parse_seconds"], 3),
                "runs": bot_runs,
            }
            memory[f"ready_{size}"] = round(max(r["rss_mb"] for r in bot_runs), 1)
            memory[f"peak_{size}_vmhwm"] = round(max(r["peak_rss_mb"] for r in bot_runs), 1)
            # The database intact (the last start left it so): MSC4222 off, then on.
            ref_median = ref_s.median
            steps[str(size)]["intact"] = _intact_summary(
                await _intact_runs(ctx, admin, bot, bot_log, repeats, msc4222=False), ref_median
            )
            steps[str(size)]["intact_state_after"] = _intact_summary(
                await _intact_runs(ctx, admin, bot, bot_log, repeats, msc4222=True), ref_median
            )
            off, on = steps[str(size)]["intact"], steps[str(size)]["intact_state_after"]
            say(
                f"reconcile {size}, database intact: timeline {off['timeline_limit']} "
                f"{off['bot_start_to_ready_s']['median']:.2f}s ({off['ratio_p50']:.2f}x); "
                f"MSC4222 on, timeline {on['timeline_limit']} "
                f"{on['bot_start_to_ready_s']['median']:.2f}s ({on['ratio_p50']:.2f}x)"
            )
            say(
                f"reconcile {size}: bot start->ready p50 {bot_s.median:.2f}s, reference sync "
                f"p50 {ref_s.median:.2f}s, ratio {ratio:.2f}, "
                f"requests {bot_runs[-1]['requests']['total']} "
                f"(per-room {bot_runs[-1]['requests']['per_room']})"
            )
            if "restart" in config.scenarios and size == config.restart_size:
                restart = await _restarts(ctx, config, bot, bot_log, client.client, chat_room)
                restart["rooms"] = size
                restart["reference_sync_s"] = steps[str(size)]["reference_sync_s"]
                out["restart"] = restart
                memory[f"after_restarts_{size}"] = restart["rss_mb"]
                memory["peak_vmhwm"] = restart["peak_rss_mb"]
                await bot.stop_async()
        out["reconcile"] = {"sizes": steps, "rooms_created_s": round(bulk.seconds, 1)}
        out["memory"] = memory
    finally:
        if bulk is not None:
            await bulk.close()
        await bot.stop_async()
        bot_proxy.stop()
        ref_proxy.stop()
    return out


async def set_msc4222(ctx: BenchContext, admin: RegisteredUser, user_id: str, on: bool) -> None:
    """Turn Synapse's per-user experimental feature `msc4222` (`state_after`) on or off."""
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as http:
        response = await http.put(
            f"{ctx.base_url}/_synapse/admin/v1/experimental_features/{user_id}",
            json={"features": {"msc4222": on}},
            headers={"Authorization": f"Bearer {admin.access_token}"},
        )
    response.raise_for_status()


async def _intact_runs(
    ctx: BenchContext,
    admin: RegisteredUser,
    bot: BenchBot,
    bot_log: Any,
    repeats: int,
    *,
    msc4222: bool,
) -> list[dict[str, Any]]:
    """Starts with the database intact, MSC4222 off or on for the bot's account.

    With it on, one unmeasured start first: the bot learns from its answer that the
    server answers `state_after` and asks a timeline of 0 from the next start on. After
    the runs the feature is turned off and the bot's note of it deleted again.
    """
    if msc4222:
        await set_msc4222(ctx, admin, bot.bot.user_id, True)
        await _fresh_start(bot, bot_log, delete=False)
        await bot.stop_async()
    runs = []
    for _ in range(repeats):
        runs.append(await _fresh_start(bot, bot_log, delete=False))
        await bot.stop_async()
    if msc4222:
        await set_msc4222(ctx, admin, bot.bot.user_id, False)
        (bot.store_path / STATE_AFTER_FILE).unlink(missing_ok=True)
    return runs


def _intact_summary(runs: list[dict[str, Any]], reference_median: float) -> dict[str, Any]:
    start = summarize([r["start_to_ready_s"] for r in runs])
    return {
        "bot_start_to_ready_s": start.as_dict(),
        "ratio_p50": round(start.median / reference_median, 3),
        "timeline_limit": runs[-1]["timeline_limit"],
        "bot_full_state_sync_s": summarize(
            [r["requests"]["full_state_sync_s"] or 0.0 for r in runs]
        ).as_dict(),
        "requests": runs[-1]["requests"]["total"],
        "per_room": runs[-1]["requests"]["per_room"],
        "rss_mb": round(max(r["rss_mb"] for r in runs), 1),
        "runs": runs,
    }


async def _fresh_start(bot: BenchBot, bot_log: Any, *, delete: bool = True) -> dict[str, Any]:
    """Delete the database (unless not `delete`), start, wait for /ready; what it took and asked."""
    if delete:
        bot.delete_database()
    offset = len(bot.log_text())
    start_to_ready = await bot.start_ready()
    ready_at = bot.started_at + start_to_ready
    rss = bot.rss_mb()
    records = between(read_log(bot_log), bot.started_at, ready_at)
    first_request = min((r["t0"] for r in records), default=ready_at)
    full = [r for r in records if (r.get("sync") or {}).get("full_state")]
    sync_done = full[0]["t1"] if full else ready_at
    reports = _log_events(bot, offset, "reconcile.done")
    report = reports[-1] if reports else {}
    prefetched = _log_events(bot, offset, "snapshot.prefetched")
    return {
        "timeline_limit": prefetched[-1].get("timeline_limit") if prefetched else None,
        "start_to_ready_s": round(start_to_ready, 3),
        "process_start_to_first_request_s": round(first_request - bot.started_at, 3),
        "synapse_busy_s": round(busy_seconds(records, bot.started_at, ready_at), 3),
        "after_sync_to_ready_s": round(ready_at - sync_done, 3),
        "requests": summary(records),
        "rooms_scanned": report.get("rooms_scanned"),
        "restored": {
            k: report.get(k) for k in ("users_restored", "rooms_restored", "chats_restored")
        },
        "conflicts": len(report.get("conflicts", []) or []),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(bot.peak_rss_mb(), 1),
    }


async def _restarts(
    ctx: BenchContext,
    config: BenchConfig,
    bot: BenchBot,
    bot_log: Any,
    client: Any,
    chat_room: str,
) -> dict[str, Any]:
    observer = Observer(client)
    runs: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        await tg.start(observer.run)
        intact_ready = await bot.start_ready()
        for rep in range(config.restart_repeats):
            stop_s = await bot.stop_async()
            start = len(observer.arrivals)
            text = f"sent while the bot is down {rep}"
            event_id, sent_at = await observer.send(chat_room, text)
            bot.start()
            match = answers(event_id, f"echo: {text}", bot.bot.user_id)
            arrival = await observer.wait_for(match, within=REPLY_TIMEOUT_S, start=start)
            first_reply = arrival.at - bot.started_at
            await bot.wait_ready_async()
            records = between(read_log(bot_log), bot.started_at, arrival.at)
            busy = busy_seconds(records, bot.started_at, arrival.at)
            first_request = min((r["t0"] for r in records), default=arrival.at)
            runs.append(
                {
                    "first_reply_s": round(first_reply, 3),
                    "from_send_s": round(arrival.at - sent_at, 3),
                    "synapse_busy_s": round(busy, 3),
                    "beyond_synapse_s": round(first_reply - busy, 3),
                    "process_start_to_first_request_s": round(first_request - bot.started_at, 3),
                    "graceful_stop_s": round(stop_s, 3),
                    "requests": summary(records),
                }
            )
            say(
                f"restart {rep}: first reply {first_reply:.2f}s after start "
                f"(Synapse busy {busy:.2f}s, beyond {first_reply - busy:.2f}s)"
            )
        tg.cancel_scope.cancel()
    await anyio.sleep(1.0)
    rss = bot.rss_mb()
    peak = bot.peak_rss_mb()
    return {
        "intact_start_to_ready_s": round(intact_ready, 3),
        "first_reply_s": summarize([r["first_reply_s"] for r in runs]).as_dict(),
        "beyond_synapse_s": summarize([r["beyond_synapse_s"] for r in runs]).as_dict(),
        "synapse_busy_s": summarize([r["synapse_busy_s"] for r in runs]).as_dict(),
        "runs": runs,
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }


def scale_chart(doc: dict[str, Any], path: Any) -> bool:
    """Start -> ready and RSS against chat rooms (log-log); False without data or matplotlib."""
    rec = doc.get("details", {}).get("reconcile")
    memory = doc.get("details", {}).get("memory", {})
    if not rec or len(rec["sizes"]) < 2:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = [int(size) for size in rec["sizes"]]
    steps = list(rec["sizes"].values())
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(13, 5))
    series = [
        ("bot, database deleted", [s["bot_start_to_ready_s"]["median"] for s in steps], "o-"),
        ("sync, timeline 0 (reference)", [s["reference_sync_s"]["median"] for s in steps], "s--"),
    ]
    for key, label in (
        ("intact", "bot, database intact"),
        ("intact_state_after", "bot, intact, MSC4222 (timeline 0)"),
    ):
        if all(key in s for s in steps):
            series.append((label, [s[key]["bot_start_to_ready_s"]["median"] for s in steps], "^-"))
    for label, values, style in series:
        ax_time.plot(sizes, values, style, label=label)
    linear = [steps[0]["reference_sync_s"]["median"] * n / sizes[0] for n in sizes]
    ax_time.plot(sizes, linear, ":", color="gray", label="linear from the smallest reference")
    ax_time.set_xscale("log")
    ax_time.set_yscale("log")
    ax_time.set_xlabel("chat rooms")
    ax_time.set_ylabel("s (p50)")
    ax_time.set_title("Reconciliation: start -> ready")
    ax_time.legend(fontsize=8)
    ready = [memory.get(f"ready_{n}") for n in sizes]
    peak = [memory.get(f"peak_{n}_vmhwm") for n in sizes]
    if all(v is not None for v in ready):
        ax_mem.plot(sizes, ready, "o-", label="RSS at ready")
    if all(v is not None for v in peak):
        ax_mem.plot(sizes, peak, "s--", label="peak (VmHWM)")
    ax_mem.axhline(200, color="tab:red", linestyle="--", label="goal 200 MiB at 10,000")
    ax_mem.set_xscale("log")
    ax_mem.set_xlabel("chat rooms")
    ax_mem.set_ylabel("MiB")
    ax_mem.set_title("Bot memory")
    ax_mem.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
