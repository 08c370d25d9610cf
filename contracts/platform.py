"""The agent platform as the bot sees it: one protocol, many adapters.

Adapters (runtime/platforms): an in-process echo platform, an HTTP adapter
speaking wire protocol v1 (contracts/wire.py). The platform owns conversation
memory, keyed by platform_chat_id; the bot only routes.

Errors, as a tree:

    PlatformError                 any failure talking to an agent
    ├── PlatformUnavailable       cannot connect / 5xx / down (retried where safe)
    ├── PlatformTimeout           no answer within the agent's timeout
    └── PlatformRejected          4xx: the platform refused the request, with its reason
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextDelta(_Event):
    """A piece of the agent's answer; concatenated in order they form the text."""

    type: Literal["text_delta"] = "text_delta"
    text: str


class EmittedFile(_Event):
    """A file the agent wrote into the shared workspace, as a workspace-relative path."""

    type: Literal["file"] = "file"
    path: str
    mimetype: str | None = None


class StatusUpdate(_Event):
    """Progress information (`thinking`, `calling tool x`); shown as typing, not as text."""

    type: Literal["status"] = "status"
    status: str


class TurnDone(_Event):
    """The turn ended normally. `text` is the full answer when the platform knows it."""

    type: Literal["done"] = "done"
    text: str | None = None


class TurnFailed(_Event):
    """The agent failed this turn; `code` is machine-readable, `message` for humans."""

    type: Literal["error"] = "error"
    code: str
    message: str


PlatformEvent = Annotated[
    TextDelta | EmittedFile | StatusUpdate | TurnDone | TurnFailed, Field(discriminator="type")
]


class QuotedMessage(_Event):
    """The earlier message a user's message replies to (a Matrix rich reply)."""

    event_id: str
    sender: str
    text: str


class UserTurn(_Event):
    """One user message sent to an agent.

    `thread_id` (the thread's root event id) and `quoted` are set only when the
    message was written in a thread or replies to an earlier message; an agent that
    does not care may ignore both.
    """

    agent_id: str
    platform_chat_id: str
    text: str
    attachments: tuple[str, ...] = ()  # workspace-relative paths
    idempotency_key: str  # the triggering Matrix event id
    sender: str | None = None
    thread_id: str | None = None
    quoted: QuotedMessage | None = None


class Snapshot(_Event):
    snapshot_id: str
    name: str
    created_at: str
    turns: int = 0


class ContextInfo(_Event):
    agent_id: str
    platform_chat_id: str
    turns: int = 0
    snapshots: int = 0
    details: dict[str, str] = Field(default_factory=dict)


class PlatformHealth(_Event):
    ok: bool
    version: str | None = None
    detail: str | None = None


class PlatformError(Exception):
    """Talking to the agent platform failed."""

    code = "platform_error"


class PlatformUnavailable(PlatformError):
    code = "unavailable"


class PlatformTimeout(PlatformError):
    code = "timeout"


class PlatformRejected(PlatformError):
    code = "rejected"


@runtime_checkable
class PlatformClient(Protocol):
    """What the bot needs from an agent platform.

    `send_turn` is safe to call twice with the same idempotency key: the
    platform answers a replayed turn with its recorded reply, not a new one.
    """

    def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        """Stream the agent's events for one user turn; ends after TurnDone or TurnFailed."""
        ...

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        """Close any live session for this chat (idempotent)."""

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        """Snapshot the chat's context; snapshots belong to `owner` (a Matrix user id)."""
        ...

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        """The owner's snapshots for this agent, oldest first."""
        ...

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        """Replace the chat's context with the snapshot's."""
        ...

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo: ...

    async def health(self) -> PlatformHealth: ...
