"""Encrypted echo latency: the same bot code answering in an encrypted and a plain room.

Two bots on the same Synapse, one creating its chat rooms encrypted
(``SURFACE_ENCRYPT_ROOMS=true``) and one plain, answer one measuring user whose nio client
has its own crypto store (it decrypts the answers and encrypts its messages in the
encrypted room, as a person's client would). The user alternates between the two rooms
message by message (encrypted first on even messages, plain first on odd ones), so both
see the same load; round trips are measured as in benchmarks/echo.py, from just before
the send to the sync response that brings the bot's complete answer, decrypted.

``e2ee_echo_ratio`` = encrypted / plain round trip (median and p95), issue 15's goal
<= 1.15. The encrypted round trip includes both sides' crypto: the user's encryption and
decryption, the bot's decryption, room-key sharing checks and encryption of its answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import nio

from benchmarks.config import BenchConfig
from benchmarks.context import BenchContext, say
from benchmarks.observer import Observer, answers
from benchmarks.processes import BenchBot
from benchmarks.stats import summarize
from runtime.dev.accounts import RegisteredUser
from runtime.dev.user import UserClient, crypto_housekeeping, onboard

TIMEOUT_S = 30.0
STORE_ENV = {"MATRIX_STORE_PASSPHRASE": "benchmark store passphrase, not a real secret"}


def encrypting_client(base_url: str, user: RegisteredUser, store: Path) -> nio.AsyncClient:
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = nio.AsyncClient(base_url, user.user_id, store_path=str(store), config=config)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    return client


class _CryptoUser(UserClient):
    """The test user for onboarding, keeping its crypto up to date after each sync."""

    async def sync(self, timeout_ms: int = 1000) -> None:
        await super().sync(timeout_ms)
        await crypto_housekeeping(self.client)


async def run_e2ee_echo(ctx: BenchContext, config: BenchConfig) -> dict[str, Any]:
    encrypted_bot_user = await ctx.register_async("e2ee-bot")
    plain_bot_user = await ctx.register_async("plain-bot")
    user = await ctx.register_async("e2ee-user")
    encrypted_bot = BenchBot(
        ctx.synapse,
        encrypted_bot_user,
        ctx.dir("e2ee-bot"),
        extra_env={**STORE_ENV, "SURFACE_ENCRYPT_ROOMS": "true"},
    )
    plain_bot = BenchBot(
        ctx.synapse,
        plain_bot_user,
        ctx.dir("plain-bot"),
        extra_env={**STORE_ENV, "SURFACE_ENCRYPT_ROOMS": "false"},
    )
    client = encrypting_client(ctx.base_url, user, ctx.dir("e2ee-user-store"))
    ctx.clients.append(client)
    try:
        await encrypted_bot.start_ready()
        await plain_bot.start_ready()
        person = _CryptoUser(client, user)
        await person.sync(0)  # device keys up before the bot shares its room keys
        _, encrypted_room = await onboard(person, encrypted_bot_user.user_id)
        _, plain_room = await onboard(person, plain_bot_user.user_id)
        if not client.rooms[encrypted_room].encrypted or client.rooms[plain_room].encrypted:
            raise RuntimeError("e2ee echo: the rooms are not encrypted and plain as asked")

        observer = Observer(client, after_sync=crypto_housekeeping)
        encrypted_ms: list[float] = []
        plain_ms: list[float] = []
        async with anyio.create_task_group() as tg:
            await tg.start(observer.run)

            async def rtt(room_id: str, bot_id: str, text: str) -> float:
                start = len(observer.arrivals)
                event_id, sent_at = await observer.send(room_id, text)
                match = answers(event_id, f"echo: {text}", bot_id)
                arrival = await observer.wait_for(match, within=TIMEOUT_S, start=start)
                await anyio.sleep(config.echo_gap_s)
                return (arrival.at - sent_at) * 1000

            async def encrypted(text: str) -> float:
                return await rtt(encrypted_room, encrypted_bot_user.user_id, text)

            async def plain(text: str) -> float:
                return await rtt(plain_room, plain_bot_user.user_id, text)

            for i in range(config.echo_warmup):
                await encrypted(f"warm-up {i}")
                await plain(f"warm-up {i}")
            for i in range(config.echo_messages):
                text = f"ping {i} {'x' * 16}"
                if i % 2 == 0:
                    encrypted_ms.append(await encrypted(text))
                    plain_ms.append(await plain(text))
                else:
                    plain_ms.append(await plain(text))
                    encrypted_ms.append(await encrypted(text))
            tg.cancel_scope.cancel()
        rss = {"encrypted": round(encrypted_bot.rss_mb(), 1), "plain": round(plain_bot.rss_mb(), 1)}
    finally:
        await encrypted_bot.stop_async()
        await plain_bot.stop_async()
    enc, pla = summarize(encrypted_ms), summarize(plain_ms)
    ratio_p50, ratio_p95 = enc.median / pla.median, enc.p95 / pla.p95
    say(
        f"e2ee echo: encrypted p50 {enc.median:.1f} ms, plain p50 {pla.median:.1f} ms, "
        f"ratio p50 {ratio_p50:.3f}, p95 {ratio_p95:.3f}"
    )
    return {
        "messages": config.echo_messages,
        "encrypted_ms": enc.as_dict(),
        "plain_ms": pla.as_dict(),
        "ratio_p50": round(ratio_p50, 4),
        "ratio_p95": round(ratio_p95, 4),
        "samples": {
            "encrypted_ms": [round(v, 2) for v in encrypted_ms],
            "plain_ms": [round(v, 2) for v in plain_ms],
        },
        "rss_mb_after": rss,
    }
