"""Marker state events the bot writes into every Space and chat room it creates.

They make Matrix the source of truth: after losing its database the bot
rebuilds its routing from these (see tasks/reconcile). Only markers whose
sender is the bot itself are trusted; power levels keep these types to the bot.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SPACE_MARKER_TYPE = "lambda.surface.space"
ROOM_MARKER_TYPE = "lambda.surface.room"
# Account data (global, on the bot's account): the highest platform_chat_id
# ever reserved, so a wiped database can never reissue one.
SEQUENCE_ACCOUNT_DATA_TYPE = "lambda.surface.sequence"
# Field in every message the bot sends in reply to a user event: the
# triggering event id. After local state loss the bot reads these back to know
# what it already answered.
REPLY_TO_FIELD = "lambda.surface.reply_to"
MARKER_VERSION = 1


class SpaceMarker(BaseModel):
    """Content of `lambda.surface.space` (state_key "") in a user's Space."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = MARKER_VERSION
    owner: str = Field(description="Matrix user id the Space belongs to")
    selected_agent_id: str | None = None


class RoomMarker(BaseModel):
    """Content of `lambda.surface.room` (state_key "") in a chat room."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = MARKER_VERSION
    owner: str
    space_id: str
    chat_id: str
    display_name: str
    agent_id: str | None = None
    platform_chat_id: str | None = None
    archived: bool = False


class SequenceHighWater(BaseModel):
    """Content of the `lambda.surface.sequence` account data event."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    reserved_through: int = Field(ge=0)
