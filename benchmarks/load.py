"""Open-loop load on the bot and on the raw nio echo client: the rig of `throughput` and `soak`.

The rig: one bot (built-in in-process echo agent, as in the echo scenario) with N chat
rooms of one user (onboarded, then `!new` N-1 times, as the concurrency scenario makes
them); the raw echo client (benchmarks/raw_echo.py, another account) in N rooms the same
user made for it; one measuring sync loop (`Observer`) over all 2N rooms; and several
sender sessions (devices) of the same user that only send.

Open loop: message i of a step is due at `t0 + i / rate` (evenly spaced, not Poisson),
goes to room `i mod N` from session `i mod K`, and is sent in its own task when due,
whether or not earlier messages were answered. A round trip runs from just before the
message's `PUT /send` to the arrival (in the observer's sync) of the complete answer:
for the bot its message carrying `REPLY_TO_FIELD` = the message's event id whose body is
the whole echo (or an edit with it), for the raw client its copy of the (unique) text.
Replies are matched after the fact, so an answer that arrives before our PUT returns
counts too. A message without a complete answer within `DRAIN_S` of the step's last
send is lost; a message answered by more than one (non-edit) message is duplicated.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import nio

from benchmarks.config import BenchConfig
from benchmarks.context import BenchContext, say
from benchmarks.observer import Arrival, Observer
from benchmarks.processes import BenchBot, Child, proc_cpu_s, start_raw_echo
from benchmarks.stats import percentile, summarize
from contracts.markers import REPLY_TO_FIELD
from runtime.dev.accounts import RegisteredUser
from runtime.dev.user import onboard

P99_LIMIT_MS = 1000.0  # a rate is held while the p99 round trip stays within this
DRAIN_S = 10.0  # after the last send: how long answers are waited for before "lost"
LATE_S = 30.0  # then how much longer a lost answer may take before the next step starts
SETUP_TIMEOUT_S = 600.0
SIDES = ("bot", "raw")


@dataclass(frozen=True, slots=True)
class Sent:
    """One message of a step; `key` is its event id (bot) or its text (raw)."""

    key: str
    expected: str  # the body of the complete answer
    due: float  # monotonic time the schedule asked for
    sent_at: float  # just before the PUT
    acked_at: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A message (or edit) of the answering side, keyed as `Sent.key`."""

    key: str
    at: float
    body: str
    is_edit: bool


@dataclass(frozen=True)
class Tally:
    """What happened to one step's messages (pure result of `tally`)."""

    sent: int
    failed_sends: int  # the PUT itself failed (counted as lost too)
    answered: int
    lost: int
    duplicated: int  # messages answered by more than one message
    latencies_ms: list[float]
    lag_ms: list[float]  # how late each send started against the schedule
    in_send_order: list[float | None] = field(default_factory=list)  # None: lost

    @property
    def p50_ms(self) -> float | None:
        return percentile(sorted(self.latencies_ms), 0.5) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        return percentile(sorted(self.latencies_ms), 0.99) if self.latencies_ms else None

    def held(self, p99_limit_ms: float = P99_LIMIT_MS) -> bool:
        """Every message answered once, and the p99 round trip within the limit."""
        p99 = self.p99_ms
        return (
            self.sent > 0
            and self.lost == 0
            and self.duplicated == 0
            and p99 is not None
            and p99 <= p99_limit_ms
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sent": self.sent,
            "failed_sends": self.failed_sends,
            "answered": self.answered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "p50_ms": _round(self.p50_ms),
            "p99_ms": _round(self.p99_ms),
            "held": self.held(),
        }
        if self.latencies_ms:
            out["latency_ms"] = summarize(self.latencies_ms).as_dict(1)
        if self.lag_ms:
            ordered = sorted(self.lag_ms)
            out["send_lag_ms"] = {
                "p99": round(percentile(ordered, 0.99), 1),
                "max": round(ordered[-1], 1),
            }
        return out


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def schedule(rate: float, count: int) -> list[float]:
    """Offsets (s) of `count` messages evenly spaced at `rate` per second (pure)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    return [i / rate for i in range(count)]


def message_count(rate: float, duration_s: float) -> int:
    """Messages in a step of `duration_s` at `rate`; at least one (pure)."""
    return max(1, math.ceil(rate * duration_s - 1e-9))


def bot_replies(arrivals: Sequence[Arrival], bot_user_id: str) -> list[Reply]:
    """The bot's answers (messages and edits) among `arrivals`, keyed by the message answered."""
    out = []
    for arrival in arrivals:
        content = arrival.content
        trigger = content.get(REPLY_TO_FIELD)
        if arrival.sender != bot_user_id or not isinstance(trigger, str):
            continue
        new_content = content.get("m.new_content")
        is_edit = isinstance(new_content, dict)
        body = (new_content if isinstance(new_content, dict) else content).get("body")
        out.append(Reply(trigger, arrival.at, str(body), is_edit))
    return out


def raw_replies(arrivals: Sequence[Arrival], raw_user_id: str) -> list[Reply]:
    """The raw echo client's copies, keyed by their text (each sent text is unique)."""
    return [
        Reply(str(a.content.get("body")), a.at, str(a.content.get("body")), False)
        for a in arrivals
        if a.sender == raw_user_id and a.event.get("type") == "m.room.message"
    ]


def tally(sent: Sequence[Sent], replies: Sequence[Reply]) -> Tally:
    """Round trips, lost and duplicated messages of one step (pure)."""
    complete: dict[str, float] = {}
    answers: dict[str, int] = {}
    for reply in replies:
        if not reply.is_edit:
            answers[reply.key] = answers.get(reply.key, 0) + 1
    wanted = {s.key: s.expected for s in sent if s.error is None}
    for reply in replies:
        if wanted.get(reply.key) == reply.body and reply.key not in complete:
            complete[reply.key] = reply.at
    in_order = [(complete[s.key] - s.sent_at) * 1000 if s.key in complete else None for s in sent]
    latencies = [v for v in in_order if v is not None]
    failed = sum(1 for s in sent if s.error is not None)
    return Tally(
        sent=len(sent),
        failed_sends=failed,
        answered=len(latencies),
        lost=len(sent) - len(latencies),
        duplicated=sum(1 for s in sent if answers.get(s.key, 0) > 1),
        latencies_ms=latencies,
        lag_ms=[(s.sent_at - s.due) * 1000 for s in sent],
        in_send_order=in_order,
    )


@dataclass
class Side:
    """One answering side: its rooms and how its replies are found."""

    name: str
    rooms: list[str]
    answerer_id: str
    pid: Callable[[], int]

    def replies(self, arrivals: Sequence[Arrival]) -> list[Reply]:
        if self.name == "bot":
            return bot_replies(arrivals, self.answerer_id)
        return raw_replies(arrivals, self.answerer_id)

    def expected(self, text: str) -> str:
        return f"echo: {text}" if self.name == "bot" else text


@dataclass
class LoadRig:
    """The processes, rooms and sessions of the load scenarios (see the module docstring)."""

    ctx: BenchContext
    bot: BenchBot
    observer: Observer
    senders: list[nio.AsyncClient]
    sides: dict[str, Side]
    raw: Child | None = None

    async def run_step(
        self, side_name: str, rate: float, duration_s: float, label: str, *, samples: bool = False
    ) -> dict[str, Any]:
        """Open-loop load at `rate` for `duration_s` on one side; the step's figures.

        `samples` keeps every round trip (ms, in send order; lost ones as null).
        """
        side = self.sides[side_name]
        count = message_count(rate, duration_s)
        tag = f"{label} {secrets.token_hex(3)}"
        start = len(self.observer.arrivals)
        cpu_before = _cpu(side.pid()), _cpu(self.ctx.synapse.pid), time.process_time()
        started = time.monotonic()
        sent = await self.open_loop(side, rate, count, tag)
        sending_s = time.monotonic() - started
        result = await self.drain(side, sent, start)
        wall = time.monotonic() - started
        cpu_after = _cpu(side.pid()), _cpu(self.ctx.synapse.pid), time.process_time()
        names = (side_name, "synapse", "generator")
        out = {
            "rate": rate,
            "duration_s": round(sending_s, 2),
            **result.as_dict(),
            # Share of one core over the step (sending + drain): who was saturated.
            "cpu_share": {
                name: round((after - before) / wall, 3)
                for name, before, after in zip(names, cpu_before, cpu_after, strict=True)
            },
            # CPU per message: what one message (and its answer) costs each process.
            "cpu_ms_per_message": {
                name: round((after - before) / count * 1000, 2)
                for name, before, after in zip(names, cpu_before, cpu_after, strict=True)
            },
        }
        if side_name == "bot":
            out["bot_rss_mb"] = round(self.bot.rss_mb(), 1)
        if samples:
            out["samples_ms"] = [_round(v, 0) for v in result.in_send_order]
        say(
            f"{label}: {side_name} {rate:g} msg/s x {count}: p50 {out['p50_ms']} ms, "
            f"p99 {out['p99_ms']} ms, lost {result.lost}, dup {result.duplicated}"
            f" -> {'held' if result.held() else 'NOT held'}"
        )
        return out

    async def open_loop(self, side: Side, rate: float, count: int, tag: str) -> list[Sent]:
        """Send `count` messages evenly spaced at `rate`, each in its own task when due."""
        offsets = schedule(rate, count)
        results: list[Sent | None] = [None] * count
        t0 = time.monotonic() + 0.05

        async def send_one(i: int, due: float) -> None:
            client = self.senders[i % len(self.senders)]
            room_id = side.rooms[i % len(side.rooms)]
            text = f"{tag} {i}"
            sent_at = time.monotonic()
            try:
                response = await client.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": text}
                )
            except Exception as exc:  # a transport error is this message's failure
                response = nio.RoomSendError(str(exc))
            acked = time.monotonic()
            if isinstance(response, nio.RoomSendResponse):
                key = str(response.event_id) if side.name == "bot" else text
                results[i] = Sent(key, side.expected(text), due, sent_at, acked)
            else:
                key = text if side.name == "raw" else f"failed {text}"
                results[i] = Sent(key, side.expected(text), due, sent_at, acked, str(response))

        async with anyio.create_task_group() as tg:
            for i, offset in enumerate(offsets):
                due = t0 + offset
                delay = due - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                tg.start_soon(send_one, i, due)
        return [s for s in results if s is not None]

    async def drain(self, side: Side, sent: list[Sent], start: int) -> Tally:
        """Wait until every message is answered or DRAIN_S passed; then tally.

        Answers still missing then are lost; they are waited for a while longer
        (`LATE_S`, not counted) so that a backlog does not spill into the next step.
        """
        await self._wait_answered(side, sent, start, DRAIN_S)
        # A little longer, so that a duplicate sent right after the answer shows.
        await anyio.sleep(0.5)
        result = tally(sent, side.replies(self.observer.arrivals[start:]))
        if result.lost:
            await self._wait_answered(side, sent, start, LATE_S)
        return result

    async def _wait_answered(self, side: Side, sent: list[Sent], start: int, within: float) -> None:
        """Until every message has its complete answer, for at most `within` seconds."""
        with anyio.move_on_after(within):
            while True:
                result = tally(sent, side.replies(self.observer.arrivals[start:]))
                if result.answered + result.failed_sends >= result.sent:
                    return
                await anyio.sleep(0.2)

    async def warm_up(self, side_name: str, rate: float) -> None:
        """One unmeasured message in every room of the side (first-message costs)."""
        side = self.sides[side_name]
        duration = len(side.rooms) / rate
        result = await self.run_step(side_name, rate, duration, f"{side_name} warm-up")
        if result["lost"]:
            raise RuntimeError(f"load warm-up: {side_name} lost {result['lost']} messages")


def _cpu(pid: int | None) -> float:
    return proc_cpu_s(pid) if pid is not None else 0.0


async def open_rig(
    ctx: BenchContext,
    config: BenchConfig,
    tg: anyio.abc.TaskGroup,
    stack: contextlib.AsyncExitStack,
    *,
    raw: bool,
) -> LoadRig:
    """Start the bot (and the raw client), make the rooms; the observer runs in `tg`.

    The processes are stopped by `stack`.
    """
    from benchmarks.concurrency import _make_rooms

    n = config.throughput_rooms
    bot_user = await ctx.register_async("load-bot")
    user = await ctx.register_async("load-user")
    bot = BenchBot(ctx.synapse, bot_user, ctx.dir("load") / "bot")
    stack.push_async_callback(bot.stop_async)
    await bot.start_ready()
    client = await ctx.login(user)
    _, first_room = await onboard(client, bot_user.user_id)
    observer = Observer(client.client)
    await tg.start(observer.run)
    started = time.monotonic()
    bot_rooms = await _make_rooms(observer, first_room, n, bot_user.user_id)
    say(f"load: {len(bot_rooms)} bot rooms in {time.monotonic() - started:.0f}s")
    sides = {"bot": Side("bot", bot_rooms, bot_user.user_id, lambda: bot.pid)}
    rig = LoadRig(ctx, bot, observer, [], sides)
    if raw:
        raw_user = await ctx.register_async("load-raw")
        rig.raw = await start_raw_echo(ctx.base_url, raw_user, ctx.dir("load-raw"))
        stack.callback(rig.raw.stop)
        raw_rooms = await _raw_rooms(observer, n, raw_user.user_id, config.create_concurrency)
        child = rig.raw
        sides["raw"] = Side("raw", raw_rooms, raw_user.user_id, lambda: child.pid)
    rig.senders = [
        await _sender(ctx, user, observer.client.homeserver)
        for _ in range(config.throughput_senders)
    ]
    return rig


async def _sender(ctx: BenchContext, user: RegisteredUser, homeserver: str) -> nio.AsyncClient:
    """Another device of `user` that only sends."""
    localpart = user.user_id[1:].split(":", 1)[0]
    device = await anyio.to_thread.run_sync(ctx.synapse.register_user, localpart, user.password)
    client = nio.AsyncClient(homeserver, device.user_id)
    client.restore_login(device.user_id, device.device_id, device.access_token)
    ctx.clients.append(client)
    return client


async def _raw_rooms(observer: Observer, n: int, raw_user_id: str, concurrency: int) -> list[str]:
    """n rooms of the measuring user with the raw client invited; returns once it joined all."""
    start = len(observer.arrivals)
    rooms: list[str] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def create() -> None:
        async with limiter:
            created = await observer.client.room_create(invite=[raw_user_id])
        assert isinstance(created, nio.RoomCreateResponse), created
        rooms.append(str(created.room_id))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(create)
    with anyio.fail_after(SETUP_TIMEOUT_S):
        while True:
            joined = {
                a.room_id
                for a in observer.arrivals[start:]
                if a.event.get("type") == "m.room.member"
                and a.event.get("state_key") == raw_user_id
                and a.content.get("membership") == "join"
            }
            if joined >= set(rooms):
                return rooms
            await anyio.sleep(0.2)


async def run_load(ctx: BenchContext, config: BenchConfig) -> dict[str, Any]:
    """The `throughput` and `soak` scenarios (whichever are selected) on one rig."""
    from benchmarks.soak import run_soak
    from benchmarks.throughput import run_throughput

    out: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
        rig = await open_rig(ctx, config, tg, stack, raw="throughput" in config.scenarios)
        held: float | None = None
        if "throughput" in config.scenarios:
            out["throughput"] = await run_throughput(rig, config)
            held = out["throughput"]["bot"]["held_msgs_s"]
            if rig.raw is not None:
                rig.raw.stop()  # the soak is the bot's alone
        if "soak" in config.scenarios:
            out["soak"] = await run_soak(rig, config, held)
        tg.cancel_scope.cancel()
    return out
