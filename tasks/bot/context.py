"""What a command handler gets: the bot's collaborators, the room, the message, a `say`.

Also the one guard for "is an agent bound to this room?": `binding_of` decides,
`explain_unbound` tells the user how to choose an agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from contracts.matrix import MatrixPort
from contracts.platform import PlatformClient
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord
from contracts.store import LedgerEntry, Store
from tasks.bot.chats import ChatRooms
from tasks.bot.pending import PendingAnswers
from tasks.catalogue import Catalogue
from tasks.replies import Replier

Say = Callable[[str], Awaitable[str]]  # returns the event id of what it said


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived collaborators every handler may use."""

    store: Store
    matrix: MatrixPort
    platform: PlatformClient
    registry: AgentRegistry
    t: Catalogue
    replier: Replier
    chats: ChatRooms
    pending: PendingAnswers


@dataclass(frozen=True, slots=True)
class Binding:
    """The agent and platform chat a room talks to."""

    agent: AgentEntry
    platform_chat_id: str


def binding_of(room: RoomRecord, registry: AgentRegistry) -> Binding | None:
    """The room's binding, or None when its agent is unset or gone or it has no platform chat."""
    agent = registry.get(room.agent_id)
    if agent is None or room.platform_chat_id is None:
        return None
    return Binding(agent, room.platform_chat_id)


async def explain_unbound(
    bot: Services,
    room: RoomRecord,
    trigger: str,
    *,
    purpose: str = "reply",
    thread: str | None = None,
) -> None:
    """Tell the user this room has no usable agent, and how to choose one."""
    key = "agent_none" if room.agent_id is None else "agent_missing"
    await bot.replier.say(
        room.room_id,
        bot.t(key, id=room.agent_id),
        reply_to=trigger,
        purpose=purpose,
        thread=thread,
    )


@dataclass(frozen=True, slots=True)
class CommandContext:
    """One command typed in one chat room; `say` answers it there."""

    bot: Services
    room: RoomRecord
    entry: LedgerEntry
    argument: str
    say: Say

    @property
    def trigger(self) -> str:
        return self.entry.event_id

    async def react(self, target: str, keys: Sequence[str]) -> None:
        """Put the reactions `keys` on the bot's message `target` (once per trigger and key)."""
        for key in keys:
            await self.bot.replier.react(self.room.room_id, target, key, reply_to=self.trigger)

    async def bound_agent(self) -> Binding | None:
        """The room's binding; None after explaining to the user what is missing."""
        binding = binding_of(self.room, self.bot.registry)
        if binding is None:
            await explain_unbound(self.bot, self.room, self.trigger)
        return binding

    async def room_agent(self) -> AgentEntry | None:
        """The room's agent (a platform chat not needed); None after explaining."""
        agent = self.bot.registry.get(self.room.agent_id)
        if agent is None:
            await explain_unbound(self.bot, self.room, self.trigger)
        return agent


Handler = Callable[[CommandContext], Awaitable[None]]


def sayer(replier: Replier, room_id: str, trigger: str, *, thread: str | None = None) -> Say:
    """A `say` that answers `trigger` in `room_id` (in `thread`, when it was written in one)."""

    async def say(text: str) -> str:
        return await replier.say(room_id, text, reply_to=trigger, thread=thread)

    return say
