"""The durable store as the tasks see it (real one: runtime/store.py, SQLite).

Every method is one transaction. Methods are synchronous: each is a short
local SQLite transaction, cheaper than a thread hop. A write never waits long for
another process's write lock (it would wait on the event loop, freezing the bot):
after a short busy timeout it raises StoreBusy, and the caller retries later,
asynchronously (the sync task does, for recording events and for handling them).

Errors, as a tree:

    StoreError                    the database cannot be used
    ├── StoreBusy                 another process holds the write lock: retry later
    ├── StoreCorrupt              not a database / integrity check failed: never overwritten
    └── StoreTooNew               written by a newer version of the bot: upgrade the bot
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from contracts.matrix import JsonDict, MatrixEvent
from contracts.state import ChatRecord, RoomRecord, UserRecord


class StoreError(Exception):
    """The database cannot be used; the message says which file and what to do."""


class StoreBusy(StoreError):
    """Another process holds the database's write lock; nothing was written. Retry later."""


class StoreCorrupt(StoreError):
    pass


class StoreTooNew(StoreError):
    pass


class LedgerStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"


# Entry kinds besides the Matrix event types themselves: an invite is no timeline
# event, so the sync task records a synthetic entry for it (one per invited room).
INVITE_ENTRY_TYPE = "lambda.surface.invite"


def invite_entry_id(room_id: str) -> str:
    """The ledger id of the invite to `room_id`: a re-sent invite is the same entry."""
    return f"invite:{room_id}"


class LedgerEntry(BaseModel):
    """One Matrix event (or a synthetic invite entry) the bot must handle exactly once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    room_id: str
    sender: str
    type: str
    content: JsonDict
    origin_server_ts: int = 0
    state_key: str | None = None
    status: LedgerStatus = LedgerStatus.PENDING

    @classmethod
    def of_event(cls, event: MatrixEvent) -> LedgerEntry:
        """The pending entry for a Matrix timeline event."""
        return cls(
            event_id=event.event_id,
            room_id=event.room_id,
            sender=event.sender,
            type=event.type,
            content=event.content,
            origin_server_ts=event.origin_server_ts,
            state_key=event.state_key,
        )

    @classmethod
    def invite(cls, room_id: str, *, inviter: str, is_direct: bool) -> LedgerEntry:
        """The synthetic entry for an invite of the bot to `room_id` by `inviter`."""
        return cls(
            event_id=invite_entry_id(room_id),
            room_id=room_id,
            sender=inviter,
            type=INVITE_ENTRY_TYPE,
            content={"is_direct": is_direct},
        )

    @property
    def is_invite(self) -> bool:
        return self.type == INVITE_ENTRY_TYPE


class SequenceState(BaseModel):
    model_config = ConfigDict(frozen=True)

    next_value: int  # the id the next allocation returns
    reserved_through: int  # ids up to here are covered by the Matrix high-water mark


class Store(Protocol):
    # users
    def get_user(self, matrix_user_id: str) -> UserRecord | None: ...
    def put_user(self, user: UserRecord) -> None: ...
    def list_users(self) -> list[UserRecord]: ...

    # rooms and chats
    def get_room(self, room_id: str) -> RoomRecord | None: ...
    def put_room(self, room: RoomRecord) -> None:
        """Insert or replace a room; a chat room's chat record is kept in step."""
        ...

    def list_rooms(self, matrix_user_id: str | None = None) -> list[RoomRecord]: ...
    def delete_room(self, room_id: str) -> None: ...
    def find_chat_room(self, matrix_user_id: str, chat_id: str) -> RoomRecord | None: ...
    def list_chats(self, matrix_user_id: str) -> list[ChatRecord]: ...
    def put_chat(self, chat: ChatRecord) -> None: ...
    def add_chat_room(self, user: UserRecord, room: RoomRecord) -> None:
        """Atomically store a new chat room and the user's advanced next_chat_index."""
        ...

    def add_new_chat_room(self, user: UserRecord, room: RoomRecord) -> None:
        """Atomically store a new chat room and raise the owner's next_chat_index.

        Only that column changes (to the larger of the stored one and
        `user.next_chat_index`): a stale `user` cannot undo another update.
        `user` is inserted whole when the store has no record of the owner.
        """
        ...

    def reserve_chat_index(self, user: UserRecord) -> None:
        """Raise the stored next_chat_index to `user.next_chat_index` (never lower it).

        Taken before a room is created with the index below it, so a creation whose
        answer was lost cannot leave that index to the next `!new`. `user` is
        inserted whole when the store has no record of it.
        """
        ...

    def set_selected_agent(self, user: UserRecord) -> None:
        """Store `user.selected_agent_id` and nothing else of an existing record.

        `user` is inserted whole when the store has no record of it.
        """
        ...

    # the global platform-chat sequence (never reuses an id)
    def sequence_state(self) -> SequenceState: ...
    def allocate_platform_chat_id(self) -> int:
        """Take the next id under BEGIN IMMEDIATE; raises StoreError past reserved_through."""
        ...

    def set_reserved_through(self, value: int) -> None: ...
    def raise_sequence_floor(self, next_value: int) -> None:
        """Make the next allocation at least `next_value` (never lowers it)."""
        ...

    # reconciliation
    def apply_rebuild(
        self,
        *,
        users: Sequence[UserRecord],
        rooms: Sequence[RoomRecord],
        chats: Sequence[ChatRecord],
        origins: Mapping[str, str],
        sequence_floor: int,
    ) -> None:
        """Write a reconciliation's records, room origins and sequence floor: all or nothing.

        `origins` maps a triggering event id to the room created for it (see `room_origin`).
        """
        ...

    # exactly-once ledger and sync checkpoint
    def record_batch(self, entries: Sequence[LedgerEntry], checkpoint: str) -> list[LedgerEntry]:
        """Insert unseen entries as pending and set the checkpoint, in one transaction.

        Returns the entries that were new (already-known event ids are ignored).
        """
        ...

    def pending_entries(self) -> list[LedgerEntry]: ...
    def mark_done(self, event_id: str) -> None:
        """Mark the entry handled, drop its content and forget the media and messages its turn sent.

        A done entry keeps its event id (is_known), room, sender, type and the time
        it was done: all exactly-once needs.
        """
        ...

    def prune_ledger(self, done_before: float) -> int:
        """Delete done entries done before `done_before` (Unix seconds); returns how many.

        Each room's newest entry stays whatever its age: gap filling pages back
        until an event it knows, and must find one.
        """
        ...

    def is_known(self, event_id: str) -> bool: ...
    def checkpoint(self) -> str | None: ...

    # media uploaded for a pending turn: a replayed turn reuses it instead of uploading again
    def uploaded_media(self, txn_id: str) -> str | None: ...
    def remember_upload(self, txn_id: str, trigger_event_id: str, mxc: str) -> None: ...

    # the answer messages a pending turn sent: a replayed turn edits them instead of
    # sending them again (a resent transaction id returns the old event, old text and all)
    def sent_message(self, txn_id: str) -> str | None: ...
    def remember_sent_message(self, txn_id: str, trigger_event_id: str, event_id: str) -> None: ...

    # which room was created for which triggering event (invite, `!new`): a re-handled
    # trigger finds its room instead of creating a second one
    def room_origin(self, trigger_event_id: str) -> str | None: ...
    def set_room_origin(self, trigger_event_id: str, room_id: str) -> None: ...

    # small key/value facts (bot session bookkeeping, catch-up markers)
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
