"""Durable state: the records the bot keeps in its database.

SQLite is a rebuildable cache of these; Matrix (marker state events) is the
source of truth for topology.
"""

from __future__ import annotations

import enum
import re

from pydantic import BaseModel, ConfigDict, Field

CHAT_ID_PATTERN = re.compile(r"^C([1-9][0-9]*)$")


class RoomType(enum.StrEnum):
    SPACE = "space"
    CHAT = "chat"


class UserRecord(BaseModel):
    """One Matrix account that talks to the bot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    matrix_user_id: str
    space_id: str | None = None
    next_chat_index: int = Field(default=1, ge=1)
    selected_agent_id: str | None = None


class RoomRecord(BaseModel):
    """A Space or chat room the bot created and manages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    room_id: str
    room_type: RoomType
    matrix_user_id: str
    space_id: str | None = None
    chat_id: str | None = None
    display_name: str | None = None
    agent_id: str | None = None
    platform_chat_id: str | None = None
    archived: bool = False


class ChatRecord(BaseModel):
    """The per-user view of one chat, listed by `!chats`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    matrix_user_id: str
    chat_id: str
    room_id: str
    display_name: str
    archived: bool = False


def chat_index(chat_id: str) -> int | None:
    """The number in a chat label (`C7` -> 7), or None when it is not a chat label."""
    match = CHAT_ID_PATTERN.match(chat_id)
    return int(match.group(1)) if match else None


def chat_label(index: int) -> str:
    return f"C{index}"
