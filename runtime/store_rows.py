"""Records as SQLite rows: the writes and reads shared by the store and the legacy import.

Each write runs on a connection inside the caller's transaction (runtime/store.py's
`_write`, or runtime/legacy_db.py's migration), so a logical change stays one
transaction.
"""

from __future__ import annotations

import json
import sqlite3

from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord
from contracts.store import LedgerEntry, LedgerStatus


def raise_sequence_floor(db: sqlite3.Connection, next_value: int) -> None:
    db.execute(
        "UPDATE sequence SET next_value = MAX(next_value, ?) WHERE name = 'platform_chat'",
        (next_value,),
    )


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def insert_user_if_missing(db: sqlite3.Connection, user: UserRecord) -> None:
    db.execute(
        "INSERT OR IGNORE INTO users (matrix_user_id, space_id, next_chat_index, "
        "selected_agent_id) VALUES (?, ?, ?, ?)",
        (user.matrix_user_id, user.space_id, user.next_chat_index, user.selected_agent_id),
    )


def raise_next_chat_index(db: sqlite3.Connection, user: UserRecord) -> None:
    insert_user_if_missing(db, user)
    db.execute(
        "UPDATE users SET next_chat_index = MAX(next_chat_index, ?) WHERE matrix_user_id = ?",
        (user.next_chat_index, user.matrix_user_id),
    )


def put_user(db: sqlite3.Connection, user: UserRecord) -> None:
    db.execute(
        "INSERT INTO users (matrix_user_id, space_id, next_chat_index, selected_agent_id) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (matrix_user_id) DO UPDATE SET "
        "space_id = excluded.space_id, next_chat_index = excluded.next_chat_index, "
        "selected_agent_id = excluded.selected_agent_id",
        (user.matrix_user_id, user.space_id, user.next_chat_index, user.selected_agent_id),
    )


def put_room(db: sqlite3.Connection, room: RoomRecord) -> None:
    db.execute(
        "INSERT OR REPLACE INTO rooms (room_id, room_type, matrix_user_id, space_id, chat_id, "
        "display_name, agent_id, platform_chat_id, archived) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            room.room_id,
            room.room_type.value,
            room.matrix_user_id,
            room.space_id,
            room.chat_id,
            room.display_name,
            room.agent_id,
            room.platform_chat_id,
            int(room.archived),
        ),
    )
    if room.room_type is RoomType.CHAT and room.chat_id:
        put_chat(
            db,
            ChatRecord(
                matrix_user_id=room.matrix_user_id,
                chat_id=room.chat_id,
                room_id=room.room_id,
                display_name=room.display_name or room.chat_id,
                archived=room.archived,
            ),
        )


def put_chat(db: sqlite3.Connection, chat: ChatRecord) -> None:
    db.execute(
        "INSERT OR REPLACE INTO chats (matrix_user_id, chat_id, room_id, display_name, archived) "
        "VALUES (?, ?, ?, ?, ?)",
        (chat.matrix_user_id, chat.chat_id, chat.room_id, chat.display_name, int(chat.archived)),
    )


def room_from_row(row: sqlite3.Row) -> RoomRecord:
    data = dict(row)
    data["archived"] = bool(data["archived"])
    return RoomRecord(**data)


def entry_from_row(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        event_id=row["event_id"],
        room_id=row["room_id"],
        sender=row["sender"],
        type=row["type"],
        state_key=row["state_key"],
        content=json.loads(row["content"]),
        origin_server_ts=row["origin_server_ts"],
        status=LedgerStatus(row["status"]),
    )
