"""Cross-room concurrency: N rooms each ask an agent that takes 1 s at the same moment.

The agent is the reference platform-agent service (`python -m platform_agent`, echo
backend) behind the bot's HTTP platform adapter; its echo backend sleeps when the
text contains `!slow <seconds>`. The rooms belong to one user who was onboarded
and then asked `!new` N-1 times: the bot dispatches per room whoever owns the rooms
(nothing on the message path is per user), and one user lets one sync loop watch
every room. One burst = one message in every room, sent concurrently; it is timed
from the moment Synapse acknowledged the last of the N sends (all messages are on
the server) to the arrival of the last complete answer; the time from the first
send is reported too. A warm-up burst opens the platform sessions first.
`ratio_floor` = that time / (the agent's delay + the time Synapse took to accept the
user's N concurrent sends in the same bursts): what the bot adds beyond the floor.

Order: then M messages per room, sent in order within a room and concurrently
across rooms; every message must be answered exactly once, and each room's
answers must arrive in the order of its messages.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from benchmarks.config import BenchConfig
from benchmarks.context import BenchContext, say
from benchmarks.observer import Arrival, Observer, answers
from benchmarks.processes import BenchBot, Child, start_platform_agent, start_proxy
from benchmarks.proxy import read_log
from benchmarks.requests import burst_timeline
from benchmarks.stats import summarize
from contracts.markers import REPLY_TO_FIELD
from runtime.dev.user import onboard

SETUP_TIMEOUT_S = 300.0
BURST_TIMEOUT_S = 120.0


def registry_yaml(platform_url: str) -> str:
    return f"""\
agents:
  - id: slow
    name: Slow echo
    description: The reference platform-agent (echo backend) over HTTP.
    backend: http
    url: {platform_url}
    default: true
  - id: echo
    name: Echo
    backend: mock
"""


async def run_concurrency(ctx: BenchContext, config: BenchConfig) -> dict[str, Any]:
    n = config.concurrency_rooms
    delay = config.agent_delay_s
    workdir = ctx.dir("concurrency")
    agent, agent_url = await start_platform_agent(workdir / "platform-agent")
    registry = workdir / "agents.yaml"
    registry.write_text(registry_yaml(agent_url), encoding="utf-8")
    bot_user = await ctx.register_async("conc-bot")
    user = await ctx.register_async("conc-user")
    proxy: Child | None = None
    proxy_url = None
    requests_log = workdir / "requests.jsonl"
    if config.trace:
        proxy, proxy_url = await start_proxy(ctx.base_url, requests_log, workdir)
    bot = BenchBot(
        ctx.synapse, bot_user, workdir / "bot", registry=registry, homeserver_url=proxy_url
    )
    timelines: dict[str, Any] = {}
    try:
        await bot.start_ready()
        client = await ctx.login(user)
        _, first_room = await onboard(client, bot_user.user_id)
        observer = Observer(client.client)
        async with anyio.create_task_group() as tg:
            await tg.start(observer.run)
            rooms = await _make_rooms(observer, first_room, n, bot_user.user_id)
            say(f"concurrency: {len(rooms)} rooms ready")

            async def burst(label: str) -> tuple[float, float, float]:
                """One message in every room at once: (from last ack, from first send, sends)."""
                start = len(observer.arrivals)
                sent: dict[str, tuple[str, float]] = {}

                async def send(room_id: str, text: str) -> None:
                    sent[text] = await observer.send(room_id, text)

                async with anyio.create_task_group() as senders:
                    for k, room_id in enumerate(rooms):
                        senders.start_soon(send, room_id, f"{label} room {k} !slow {delay:g}")
                acked = time.monotonic()
                first_sent = min(at for _, at in sent.values())
                last = 0.0
                for text, (event_id, _) in sent.items():
                    match = answers(event_id, f"echo: {text}", bot_user.user_id)
                    arrival = await observer.wait_for(match, within=BURST_TIMEOUT_S, start=start)
                    last = max(last, arrival.at)
                if proxy is not None:
                    await anyio.sleep(0.5)  # let the typing-off requests land in the log
                    timelines[label] = burst_timeline(read_log(requests_log), first_sent, last)
                return last - acked, last - first_sent, acked - first_sent

            async def bursts(name: str) -> dict[str, Any]:
                await burst(f"{name} warm-up")
                samples = [await burst(f"{name} {r}") for r in range(config.concurrency_repeats)]
                replies = summarize([a for a, _, _ in samples])
                sends = summarize([b for _, _, b in samples])
                floor = delay + sends.median
                for r, (a, f, _) in enumerate(samples):
                    say(f"concurrency {name} {r}: {a:.2f}s after last ack, {f:.2f}s after 1st send")
                return {
                    # Goal <= 1.15 (issue 16): what the bot adds beyond the agent's delay and
                    # what Synapse needs for the burst's sends, both from this run.
                    "ratio_floor": round(replies.median / floor, 4),
                    "ratio_floor_samples": [round(a / (delay + b), 4) for a, _, b in samples],
                    "all_replies_s": replies.as_dict(),
                    "all_replies_from_first_send_s": summarize(
                        [f for _, f, _ in samples]
                    ).as_dict(),
                    # What N concurrent sends cost this Synapse (first send to last ack): the
                    # bot's N answers cost it as much, after the agent's delay at the earliest.
                    "user_send_burst_s": sends.as_dict(),
                    "synapse_floor_s": round(floor, 3),
                    "beyond_floor_s": round(replies.median - floor, 3),
                    "samples_s": [round(a, 3) for a, _, _ in samples],
                }

            limit = _room_concurrency(bot)
            default = await bursts("default")
            order = await _order_check(
                observer, rooms, config.order_messages, delay, bot_user.user_id
            )
            variant: dict[str, Any] | None = None
            if config.concurrency_variant_limit > limit:
                # The same bursts with the room-concurrency limit raised: is the limit the cap?
                await bot.stop_async()
                bot.env["SURFACE_ROOM_CONCURRENCY"] = str(config.concurrency_variant_limit)
                await bot.start_ready()
                variant = {
                    "bot_room_concurrency": config.concurrency_variant_limit,
                    **await bursts(f"limit {config.concurrency_variant_limit}"),
                }
            tg.cancel_scope.cancel()
        rss = bot.rss_mb()
        peak = bot.peak_rss_mb()
    finally:
        await bot.stop_async()
        agent.stop()
        if proxy is not None:
            proxy.stop()
    return {
        "rooms": len(rooms),
        "agent_delay_s": delay,
        "bot_room_concurrency": limit,
        **default,
        "order": order,
        "variant": variant,
        "through_proxy": proxy is not None,
        **({"bot_requests_by_burst": timelines} if timelines else {}),
        "rss_mb": {"after": round(rss, 1), "peak": round(peak, 1)},
    }


def _room_concurrency(bot: BenchBot) -> int:
    from runtime.settings import Settings

    value = bot.env.get("SURFACE_ROOM_CONCURRENCY")
    return int(value) if value else int(Settings.model_fields["surface_room_concurrency"].default)


async def _make_rooms(observer: Observer, first_room: str, n: int, bot_user_id: str) -> list[str]:
    """The onboarded room plus n-1 rooms made with `!new` (the user joins each)."""
    known = len(observer.invites)
    start = len(observer.arrivals)
    for _ in range(n - 1):
        await observer.send(first_room, "!new")
    invites = await observer.wait_invites(known + n - 1, within=SETUP_TIMEOUT_S)
    new_rooms = invites[known:]
    limiter = anyio.CapacityLimiter(8)

    async def join(room_id: str) -> None:
        async with limiter:
            await observer.join(room_id)

    async with anyio.create_task_group() as tg:
        for room_id in new_rooms:
            tg.start_soon(join, room_id)

    # Every !new was answered (the bot is done creating rooms before we measure).
    def replied(arrival: Arrival) -> bool:
        return arrival.sender == bot_user_id and arrival.room_id == first_room

    for _ in range(n - 1):
        arrival = await observer.wait_for(replied, within=SETUP_TIMEOUT_S, start=start)
        start = observer.arrivals.index(arrival) + 1
    return [first_room, *new_rooms]


async def _order_check(
    observer: Observer, rooms: list[str], per_room: int, delay: float, bot_user_id: str
) -> dict[str, Any]:
    start = len(observer.arrivals)
    sent: dict[str, list[str]] = {}  # room -> event ids in send order
    started = time.monotonic()

    async def send_room(k: int, room_id: str) -> None:
        ids = sent.setdefault(room_id, [])
        for j in range(per_room):
            event_id, _ = await observer.send(room_id, f"order {j} room {k} !slow {delay:g}")
            ids.append(event_id)

    async with anyio.create_task_group() as tg:
        for k, room_id in enumerate(rooms):
            tg.start_soon(send_room, k, room_id)
    acked = time.monotonic()
    expected = {event_id for ids in sent.values() for event_id in ids}

    # Wait until every message has an answer, then check the order and duplicates.
    with anyio.fail_after(BURST_TIMEOUT_S + per_room * delay * len(rooms)):
        while True:
            answered = _answers_by_trigger(observer.arrivals[start:], bot_user_id)
            if expected <= answered.keys():
                break
            await anyio.sleep(0.05)
    finished = max(a.at for a in observer.arrivals[start:])
    answered = _answers_by_trigger(observer.arrivals[start:], bot_user_id)
    duplicates = sum(1 for ids in answered.values() if len(ids) > 1)
    out_of_order = []
    for room_id, ids in sent.items():
        sequence = [
            a.content.get(REPLY_TO_FIELD)
            for a in observer.arrivals[start:]
            if a.room_id == room_id and _is_answer(a, bot_user_id)
        ]
        if sequence != ids:
            out_of_order.append(room_id)
    return {
        "messages_per_room": per_room,
        "messages": len(expected),
        "answered": len(expected & answered.keys()),
        "duplicates": duplicates,
        "rooms_out_of_order": len(out_of_order),
        "in_order": not out_of_order and duplicates == 0,
        "all_replies_s": round(finished - acked, 3),
        "send_s": round(acked - started, 3),
    }


def _is_answer(arrival: Arrival, bot_user_id: str) -> bool:
    content = arrival.content
    return (
        arrival.sender == bot_user_id
        and isinstance(content.get(REPLY_TO_FIELD), str)
        and content.get("m.relates_to", {}).get("rel_type") != "m.replace"
    )


def _answers_by_trigger(arrivals: list[Arrival], bot_user_id: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for arrival in arrivals:
        if _is_answer(arrival, bot_user_id):
            trigger = str(arrival.content[REPLY_TO_FIELD])
            found.setdefault(trigger, []).append(str(arrival.event.get("event_id")))
    return found
