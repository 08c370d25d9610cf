"""Echo latency overhead: the bot (in-process echo agent) against a raw nio echo client.

The same user talks to both, alternating message by message (bot first on even
messages, raw first on odd ones), so both see the same Synapse load and drift, with
a short pause (`echo_gap_s`) after each answer so that what a side does after
answering (the bot's typing-off, its own sync wake-ups) does not land in the other
side's measurement. A
round trip runs from just before the user's send to the arrival of the sync
response that shows the complete answer: the bot's first message whose body is the
whole echo (it sends one message when the answer is complete within its edit
interval), or a later edit carrying it; for the raw client, its copy of the text.
"""

from __future__ import annotations

from typing import Any

import anyio
import nio

from benchmarks.config import BenchConfig
from benchmarks.context import BenchContext, say
from benchmarks.observer import Arrival, Observer, answers, echoes
from benchmarks.processes import BenchBot, Child, proc_cpu_s, start_proxy, start_raw_echo
from benchmarks.proxy import read_log
from benchmarks.requests import turn_breakdown
from benchmarks.stats import summarize
from runtime.dev.user import onboard

TIMEOUT_S = 30.0


async def run_echo(ctx: BenchContext, config: BenchConfig) -> dict[str, Any]:
    bot_user = await ctx.register_async("echo-bot")
    user = await ctx.register_async("echo-user")
    raw_user = await ctx.register_async("raw-echo")
    workdir = ctx.dir("echo-bot")
    proxy: Child | None = None
    proxy_url = None
    if config.trace:
        proxy, proxy_url = await start_proxy(ctx.base_url, workdir / "requests.jsonl", workdir)
    bot = BenchBot(ctx.synapse, bot_user, workdir, homeserver_url=proxy_url)
    raw = None
    windows: list[tuple[float, float]] = []
    try:
        ready_s = await bot.start_ready()
        await anyio.sleep(1.0)  # let start-up work settle before the idle reading
        rss_idle = bot.rss_mb()
        say(f"echo: bot ready in {ready_s:.2f}s, idle RSS {rss_idle:.1f} MiB")
        client = await ctx.login(user)
        _, chat_room = await onboard(client, bot_user.user_id)
        raw = await start_raw_echo(ctx.base_url, raw_user, ctx.dir("raw-echo"))
        created = await client.client.room_create(invite=[raw_user.user_id], is_direct=True)
        assert isinstance(created, nio.RoomCreateResponse), created
        raw_room = str(created.room_id)

        observer = Observer(client.client)
        async with anyio.create_task_group() as tg:
            await tg.start(observer.run)
            await observer.wait_for(_joined(raw_room, raw_user.user_id), within=TIMEOUT_S)

            async def bot_rtt(text: str) -> float:
                start = len(observer.arrivals)
                event_id, sent_at = await observer.send(chat_room, text)
                match = answers(event_id, f"echo: {text}", bot_user.user_id)
                arrival = await observer.wait_for(match, within=TIMEOUT_S, start=start)
                windows.append((sent_at, arrival.at))
                await anyio.sleep(config.echo_gap_s)
                return arrival.at - sent_at

            async def raw_rtt(text: str) -> float:
                start = len(observer.arrivals)
                _, sent_at = await observer.send(raw_room, text)
                match = echoes(raw_room, text, raw_user.user_id)
                arrival = await observer.wait_for(match, within=TIMEOUT_S, start=start)
                await anyio.sleep(config.echo_gap_s)
                return arrival.at - sent_at

            for i in range(config.echo_warmup):
                await bot_rtt(f"warm-up {i}")
                await raw_rtt(f"warm-up {i}")
            bot_ms: list[float] = []
            raw_ms: list[float] = []
            cpu_before = bot.cpu_s(), proc_cpu_s(raw.pid)
            for i in range(config.echo_messages):
                text = f"ping {i} {'x' * 16}"
                if i % 2 == 0:
                    bot_ms.append(await bot_rtt(text) * 1000)
                    raw_ms.append(await raw_rtt(text) * 1000)
                else:
                    raw_ms.append(await raw_rtt(text) * 1000)
                    bot_ms.append(await bot_rtt(text) * 1000)
            cpu_bot = (bot.cpu_s() - cpu_before[0]) / config.echo_messages * 1000
            cpu_raw = (proc_cpu_s(raw.pid) - cpu_before[1]) / config.echo_messages * 1000
            tg.cancel_scope.cancel()
        await anyio.sleep(1.0)
        rss_after = bot.rss_mb()
        peak = bot.peak_rss_mb()
    finally:
        if raw is not None:
            raw.stop()
        await bot.stop_async()
        if proxy is not None:
            proxy.stop()
    bot_summary, raw_summary = summarize(bot_ms), summarize(raw_ms)
    ratio = bot_summary.median / raw_summary.median
    say(
        f"echo: bot p50 {bot_summary.median:.1f} ms, raw p50 {raw_summary.median:.1f} ms, "
        f"ratio {ratio:.3f}"
    )
    result: dict[str, Any] = {
        "messages": config.echo_messages,
        "bot_ms": bot_summary.as_dict(),
        "raw_ms": raw_summary.as_dict(),
        "ratio_p50": round(ratio, 4),
        # CPU per message while measuring (both idle-poll the whole time).
        "cpu_ms_per_message": {"bot": round(cpu_bot, 2), "raw": round(cpu_raw, 2)},
        "samples": {
            "bot_ms": [round(v, 2) for v in bot_ms],
            "raw_ms": [round(v, 2) for v in raw_ms],
        },
        "rss_mb": {
            "idle": round(rss_idle, 1),
            "after": round(rss_after, 1),
            "peak": round(peak, 1),
        },
        "bot_start_to_ready_s": round(ready_s, 3),
        "through_proxy": proxy is not None,
    }
    if proxy is not None:
        # Only the measured messages (the warm-up windows come first).
        parts = turn_breakdown(read_log(workdir / "requests.jsonl"), windows[config.echo_warmup :])
        result["bot_turn_breakdown_ms"] = {
            name: summarize(values).as_dict(2) for name, values in parts.items() if values
        }
    return result


def _joined(room_id: str, user_id: str) -> Any:
    def match(arrival: Arrival) -> bool:
        return (
            arrival.room_id == room_id
            and arrival.event.get("type") == "m.room.member"
            and arrival.event.get("state_key") == user_id
            and arrival.content.get("membership") == "join"
        )

    return match
