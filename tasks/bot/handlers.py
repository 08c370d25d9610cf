"""The command handlers: one async function per command, each given a `CommandContext`.

Which text runs which handler is declared in `tasks/bot/table.py`; a handler
only does its command's work and answers with `ctx.say`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.platform import PlatformError
from tasks.bot.chats import ChatLimitReached
from tasks.bot.context import CommandContext, explain_unbound
from tasks.bot.pending import NO_KEY, NUMBER_KEYS, YES_KEY, Pending
from tasks.bot.rejoin import chats_overview
from tasks.commands import clean_name
from tasks.failures import log_platform_error, platform_error_text
from tasks.rooms import write_room_marker


async def new_chat(ctx: CommandContext) -> None:
    bot = ctx.bot
    user = bot.chats.user_of(ctx.room)
    gone = bot.chats.missing_selection(user)
    if gone is not None:  # never fall back silently: the user picks (seed 000)
        await ctx.say(bot.t("selected_missing_new", id=gone))
        return
    try:
        new_room = await bot.chats.create(
            user, name=clean_name(ctx.argument) or None, trigger=ctx.trigger
        )
    except ChatLimitReached as exc:
        await ctx.say(bot.t("new_limit", limit=exc.limit))
        return
    agent = bot.registry.get(new_room.agent_id)
    await ctx.say(
        bot.t(
            "new_created",
            name=new_room.display_name,
            chat_id=new_room.chat_id,
            agent=agent.name if agent else new_room.agent_id,
        )
    )


async def list_chats(ctx: CommandContext) -> None:
    """List the user's chats; invite them back to the ones they left (tasks/bot/rejoin.py)."""
    await ctx.say(await chats_overview(ctx.bot, ctx.room.matrix_user_id, here=ctx.room.room_id))


async def rename(ctx: CommandContext) -> None:
    bot, room = ctx.bot, ctx.room
    name = clean_name(ctx.argument)
    if not name:
        await ctx.say(bot.t("rename_empty"))
        return
    renamed = room.model_copy(update={"display_name": name})
    await bot.matrix.send_state(room.room_id, "m.room.name", {"name": name})
    await write_room_marker(bot.matrix, renamed)
    bot.store.put_room(renamed)
    await bot.chats.face.show(renamed, member=False)
    await ctx.say(bot.t("renamed", name=name))


async def archive(ctx: CommandContext) -> None:
    asked = await ctx.say(ctx.bot.t("archive_confirm", name=ctx.room.display_name))
    ctx.bot.pending.ask(ctx.room.room_id, "archive", message_id=asked)
    await ctx.react(asked, (YES_KEY, NO_KEY))  # a click on one answers (`reaction`)


async def clear(ctx: CommandContext) -> None:
    asked = await ctx.say(ctx.bot.t("clear_confirm"))
    ctx.bot.pending.ask(ctx.room.room_id, "clear", message_id=asked)
    await ctx.react(asked, (YES_KEY, NO_KEY))


async def yes(ctx: CommandContext) -> None:
    bot, room = ctx.bot, ctx.room
    pending = bot.pending.take(room.room_id)
    question = pending.question if pending else None
    if question == "archive":
        archived = room.model_copy(update={"archived": True})
        await write_room_marker(bot.matrix, archived)
        bot.store.put_room(archived)
        await ctx.say(bot.t("archived", name=room.display_name))
    elif question == "clear":
        rotated = await bot.chats.rotate(room, agent_id=room.agent_id)
        await ctx.say(bot.t("cleared", platform_chat_id=rotated.platform_chat_id))
    else:
        await ctx.say(bot.t("nothing_pending"))


async def no(ctx: CommandContext) -> None:
    had = ctx.bot.pending.discard(ctx.room.room_id)
    await ctx.say(ctx.bot.t("cancelled") if had else ctx.bot.t("nothing_pending"))


async def list_agents(ctx: CommandContext) -> None:
    t, registry = ctx.bot.t, ctx.bot.registry
    lines = [t("agents_header"), ""]
    for agent in registry:
        lines.append(
            t(
                "agents_line",
                id=agent.id,
                name=agent.name,
                description=agent.description or "—",
                default=t("agents_default") if agent is registry.default else "",
                current=t("agents_current") if agent.id == ctx.room.agent_id else "",
            )
        )
    await ctx.say("\n".join(lines))


async def show_or_switch_agent(ctx: CommandContext) -> None:
    bot, room = ctx.bot, ctx.room
    if not ctx.argument:
        if (agent := await ctx.room_agent()) is not None:
            await ctx.say(bot.t("agent_show", name=agent.name, id=agent.id))
        return
    target = bot.registry.get(ctx.argument)
    if target is None:
        await ctx.say(bot.t("agent_unknown", id=ctx.argument))
        return
    await bot.chats.select_agent(bot.chats.user_of(room), target.id)
    if room.agent_id == target.id:
        await ctx.say(bot.t("agent_same", name=target.name))
        return
    await bot.chats.rotate(room, agent_id=target.id)
    await ctx.say(bot.t("agent_switched", name=target.name, id=target.id))


async def save(ctx: CommandContext) -> None:
    binding = await ctx.bound_agent()
    if binding is None:
        return
    name = ctx.argument or datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    try:
        snap = await ctx.bot.platform.save_snapshot(
            binding.agent.id, binding.platform_chat_id, owner=ctx.room.matrix_user_id, name=name
        )
    except PlatformError as exc:
        await ctx.say(
            platform_error_text(ctx.bot.t, exc, trigger=ctx.trigger, room_id=ctx.room.room_id)
        )
        return
    await ctx.say(ctx.bot.t("saved", name=snap.name, turns=snap.turns))


async def load(ctx: CommandContext) -> None:
    """List the snapshots; the user's next message, a number, picks one (`load_choice`)."""
    bot = ctx.bot
    agent = await ctx.room_agent()
    if agent is None:
        return
    try:
        snaps = await bot.platform.list_snapshots(agent.id, owner=ctx.room.matrix_user_id)
    except PlatformError as exc:
        await ctx.say(
            platform_error_text(bot.t, exc, trigger=ctx.trigger, room_id=ctx.room.room_id)
        )
        return
    if not snaps:
        await ctx.say(bot.t("snapshots_empty"))
        return
    lines = [bot.t("snapshots_header"), ""]
    for n, snap in enumerate(snaps, start=1):
        lines.append(
            bot.t(
                "snapshots_line", n=n, name=snap.name, created_at=snap.created_at, turns=snap.turns
            )
        )
    listed = await ctx.say("\n".join(lines))
    bot.pending.offer_snapshots(ctx.room.room_id, snaps, message_id=listed)
    await ctx.react(listed, NUMBER_KEYS[: len(snaps)])  # 1️⃣ … 🔟: a click picks


async def load_choice(ctx: CommandContext, choice: int, pending: Pending) -> None:
    """The user answered a `!load` list with a number."""
    bot = ctx.bot
    if not 1 <= choice <= len(pending.snapshots):
        await ctx.say(bot.t("load_bad_choice", count=len(pending.snapshots)))
        return
    bot.pending.discard(ctx.room.room_id)
    binding = await ctx.bound_agent()
    if binding is None:
        return
    snap = pending.snapshots[choice - 1]
    try:
        info = await bot.platform.load_snapshot(
            binding.agent.id,
            binding.platform_chat_id,
            owner=ctx.room.matrix_user_id,
            snapshot_id=snap.snapshot_id,
        )
    except PlatformError as exc:
        await ctx.say(
            platform_error_text(bot.t, exc, trigger=ctx.trigger, room_id=ctx.room.room_id)
        )
        return
    await ctx.say(bot.t("loaded", name=snap.name, turns=info.turns))


async def context(ctx: CommandContext) -> None:
    bot, room = ctx.bot, ctx.room
    agent = bot.registry.get(room.agent_id)
    turns: object = "?"
    snapshots: object = "?"
    details = ""
    if agent is not None and room.platform_chat_id is not None:
        try:
            info = await bot.platform.context_info(agent.id, room.platform_chat_id)
            turns, snapshots = info.turns, info.snapshots
            details = "".join(f"- {k}: {v}\n" for k, v in sorted(info.details.items()))
        except PlatformError as exc:
            ref = log_platform_error(exc, trigger=ctx.trigger, room_id=room.room_id)
            details = bot.t("platform_context_error", code=exc.code, ref=ref)
    await ctx.say(
        bot.t(
            "context",
            chat_id=room.chat_id,
            name=room.display_name,
            agent=agent.name if agent else "—",
            agent_id=room.agent_id or "—",
            platform_chat_id=room.platform_chat_id or "—",
            turns=turns,
            snapshots=snapshots,
            details=details,
        )
    )
    if agent is None:
        await explain_unbound(bot, room, ctx.trigger, purpose="agent-problem")
