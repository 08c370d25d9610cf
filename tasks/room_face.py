"""How a chat room presents itself: its topic, and the bot under its agent's name and face.

The topic names the chat, its agent and its platform conversation, so a glance at
the room header says what `!context` would; it is set when the room is created and
again by `!rename`, `!agent` and `!clear` (each changes something it shows).

In each chat room the bot appears as its agent: its own `m.room.member` state
there carries the agent's name and, when the registry gives one, avatar (a
per-room display name; the bot's global profile stays as it is). An avatar given
as a file is uploaded once per content and remembered in the bot's account data
(`AVATARS_ACCOUNT_DATA`, sha256 -> mxc), so neither a restart nor a lost database
uploads it again.

Both are cosmetic: a homeserver refusal is logged and the command goes on (bad
credentials still stop the bot).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import structlog

from contracts.matrix import JsonDict, MatrixAuthError, MatrixError, MatrixPort
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord
from tasks.catalogue import Catalogue

log = structlog.get_logger(__name__)

AVATARS_ACCOUNT_DATA = "lambda.surface.avatars"
# A larger avatar file is not uploaded (an avatar is a small picture).
MAX_AVATAR_BYTES = 2 * 1024 * 1024
_AVATAR_TYPES = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}


def room_topic(t: Catalogue, room: RoomRecord, agent: AgentEntry | None) -> str:
    """The topic of a chat room: its name and chat id, its agent, its platform conversation."""
    return t(
        "room_topic",
        name=room.display_name or room.chat_id or "",
        chat_id=room.chat_id or "",
        agent=agent.name if agent is not None else (room.agent_id or "—"),
        platform_chat_id=room.platform_chat_id or "—",
    )


def member_content(agent: AgentEntry | None, avatar_url: str | None) -> JsonDict | None:
    """The bot's own member state in a room of `agent` (None: no agent to show)."""
    if agent is None:
        return None
    content: JsonDict = {"membership": "join", "displayname": agent.name}
    if avatar_url is not None:
        content["avatar_url"] = avatar_url
    return content


class RoomFace:
    """Sets a chat room's topic and the bot's per-room name and avatar."""

    def __init__(self, matrix: MatrixPort, registry: AgentRegistry, catalogue: Catalogue) -> None:
        self._matrix = matrix
        self._registry = registry
        self._t = catalogue
        self._avatars: dict[str, str] = {}  # file path -> mxc, this run

    async def show(self, room: RoomRecord, *, topic: bool = True, member: bool = True) -> None:
        """Bring the room's topic and/or the bot's member state up to date with `room`."""
        agent = self._registry.get(room.agent_id)
        if topic:
            await self._cosmetic(
                room.room_id,
                "m.room.topic",
                {"topic": room_topic(self._t, room, agent)},
                "",
            )
        if member:
            content = member_content(agent, await self._avatar_url(agent))
            if content is not None:
                await self._cosmetic(room.room_id, "m.room.member", content, self._matrix.user_id)

    def topic_for(self, room: RoomRecord) -> str:
        return room_topic(self._t, room, self._registry.get(room.agent_id))

    async def _cosmetic(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str
    ) -> None:
        try:
            await self._matrix.send_state(room_id, event_type, content, state_key)
        except MatrixAuthError:
            raise
        except MatrixError as exc:
            log.warning("room_face.failed", room_id=room_id, type=event_type, error=str(exc))

    async def _avatar_url(self, agent: AgentEntry | None) -> str | None:
        """The agent's avatar as an mxc URI: as given, or its file uploaded (once)."""
        if agent is None or agent.avatar is None:
            return None
        if agent.avatar.startswith("mxc://"):
            return agent.avatar
        if (known := self._avatars.get(agent.avatar)) is not None:
            return known
        try:
            mxc = await self._upload_avatar(Path(agent.avatar))
        except (OSError, ValueError) as exc:
            log.warning("room_face.avatar_unreadable", agent_id=agent.id, error=str(exc))
            return None
        except MatrixAuthError:
            raise
        except MatrixError as exc:
            log.warning("room_face.avatar_upload_failed", agent_id=agent.id, error=str(exc))
            return None
        self._avatars[agent.avatar] = mxc
        return mxc

    async def _upload_avatar(self, path: Path) -> str:
        data = await anyio.to_thread.run_sync(_read_avatar, path)
        digest = hashlib.sha256(data).hexdigest()
        uploaded = await self._matrix.get_account_data(AVATARS_ACCOUNT_DATA) or {}
        known = uploaded.get(digest)
        if isinstance(known, str) and known.startswith("mxc://"):
            return known
        mxc = await self._matrix.upload(
            data,
            content_type=_AVATAR_TYPES.get(path.suffix.lower(), "image/jpeg"),
            filename=path.name,
        )
        await self._matrix.set_account_data(AVATARS_ACCOUNT_DATA, {**uploaded, digest: mxc})
        log.info("room_face.avatar_uploaded", file=path.name, mxc=mxc)
        return mxc


def _read_avatar(path: Path) -> bytes:
    with path.open("rb") as file:
        data = file.read(MAX_AVATAR_BYTES + 1)
    if len(data) > MAX_AVATAR_BYTES:
        raise ValueError(f"{path.name} is over {MAX_AVATAR_BYTES} bytes")
    return data
