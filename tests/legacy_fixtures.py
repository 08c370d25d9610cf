"""The old surface's key-value database, built from the seeds' description (seed 000).

One table of key -> JSON text rows: ``matrix_user:{user}``, ``matrix_room:{room}``,
``chat:{user}:{chat_id}`` and ``PLATFORM_CHAT_SEQ_KEY``. Used by the unit tests of the
migration and by the e2e upgrade test (which writes one beside rooms made as the old
bot made them).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path

SEQUENCE_KEY = "PLATFORM_CHAT_SEQ_KEY"


def user_value(space_id: str, *, next_chat_index: int, selected: str | None) -> dict[str, object]:
    return {"space_id": space_id, "next_chat_index": next_chat_index, "selected_agent_id": selected}


def room_value(
    *,
    owner: str,
    space_id: str,
    chat_id: str,
    display_name: str,
    platform_chat_id: str,
    agent_id: str,
) -> dict[str, object]:
    """A chat room's record, shaped as seed 000's example."""
    return {
        "room_type": "chat",
        "chat_id": chat_id,
        "display_name": display_name,
        "matrix_user_id": owner,
        "space_id": space_id,
        "platform_chat_id": platform_chat_id,
        "agent_id": agent_id,
    }


def chat_value(*, owner: str, chat_id: str, room_id: str, name: str) -> dict[str, object]:
    """The old ChatManager entry: `get_or_create(user_id, chat_id, platform, surface_ref, name)`."""
    return {
        "user_id": owner,
        "chat_id": chat_id,
        "platform": "matrix",
        "surface_ref": room_id,
        "name": name,
    }


def write_legacy_db(path: Path, rows: Mapping[str, object], *, table: str = "kv") -> None:
    """A SQLite file holding `rows` as the old surface did (values as JSON text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany(
            f"INSERT INTO {table} (key, value) VALUES (?, ?)",
            [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in rows.items()],
        )
        db.commit()
    finally:
        db.close()


def alice_rows(
    alice: str, space: str, rooms: Mapping[str, tuple[str, str, str]], *, seq: int, selected: str
) -> dict[str, object]:
    """Alice's user, rooms and chats; `rooms` maps room id -> (chat id, name, platform id)."""
    rows: dict[str, object] = {
        f"matrix_user:{alice}": user_value(
            space, next_chat_index=len(rooms) + 1, selected=selected
        ),
        SEQUENCE_KEY: seq,
    }
    for room_id, (chat_id, name, platform_chat_id) in rooms.items():
        rows[f"matrix_room:{room_id}"] = room_value(
            owner=alice,
            space_id=space,
            chat_id=chat_id,
            display_name=name,
            platform_chat_id=platform_chat_id,
            agent_id=selected,
        )
        rows[f"chat:{alice}:{chat_id}"] = chat_value(
            owner=alice, chat_id=chat_id, room_id=room_id, name=name
        )
    return rows
