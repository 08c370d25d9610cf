"""Migrating the old surface's key-value database forward (the upgrade path, seed 000).

The surface this bot replaces kept its state in ``lambda_matrix.db`` as one table of
key -> JSON value rows:

    matrix_user:{user id}            {"space_id", "next_chat_index", "selected_agent_id"}
    matrix_room:{room id}            {"room_type", "chat_id", "display_name",
                                      "matrix_user_id", "space_id", "platform_chat_id",
                                      "agent_id"}
    chat:{user id}:{chat id}         the chat list entry ({"name", "surface_ref", ...})
    PLATFORM_CHAT_SEQ_KEY            the last platform_chat_id issued

`plan_migration` (pure) maps those rows to our records; `migrate_legacy_database`
finds such a table in the configured database file (by its shape and key prefixes:
no other file is looked at), copies the file to ``<name>.pre-migration`` first, and
writes the records, the sequence floor and the report in one transaction that also
drops the old table, so a second start finds nothing to migrate. The schema itself is
runtime/store.py's (created by opening the store once, before the import): this module
adds no schema version. Anything that cannot be mapped is named in the report
(``unmapped``), never dropped silently; the original stays in the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from pydantic import ValidationError

from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord, chat_index
from runtime.store import SqliteStore
from runtime.store_rows import put_chat, put_room, put_user, raise_sequence_floor, set_meta
from runtime.store_schema import SQLITE_HEADER

log = structlog.get_logger(__name__)

USER_PREFIX = "matrix_user:"
ROOM_PREFIX = "matrix_room:"
CHAT_PREFIX = "chat:"
# The old code's constant was PLATFORM_CHAT_SEQ_KEY; both spellings of its value seen.
SEQUENCE_KEYS = frozenset({"PLATFORM_CHAT_SEQ_KEY", "PLATFORM_CHAT_SEQ", "platform_chat_seq"})
BACKUP_SUFFIX = ".pre-migration"
REPORT_META_KEY = "legacy_migration"
OUR_TABLES = frozenset(
    {"users", "rooms", "chats", "sequence", "meta", "ledger", "checkpoint", "uploads"}
)
_USER_FIELDS = {"space_id", "next_chat_index", "selected_agent_id", "matrix_user_id"}
_ROOM_FIELDS = {
    "room_type",
    "chat_id",
    "display_name",
    "matrix_user_id",
    "space_id",
    "platform_chat_id",
    "agent_id",
    "archived",
    "room_id",
}


@dataclass
class LegacyImport:
    """What the old rows become; `unmapped` names every row or field that is not kept."""

    users: dict[str, UserRecord] = field(default_factory=dict)
    rooms: dict[str, RoomRecord] = field(default_factory=dict)
    chats: dict[tuple[str, str], ChatRecord] = field(default_factory=dict)
    sequence_next: int = 1
    unmapped: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.users) + len(self.rooms) + len(self.chats)

    def as_dict(self) -> dict[str, object]:
        return {
            "users": len(self.users),
            "rooms": len(self.rooms),
            "chats": len(self.chats),
            "sequence_next": self.sequence_next,
            "unmapped": list(self.unmapped),
        }


@dataclass(frozen=True)
class MigrationResult:
    """A migration done at this start: what was imported, and where the original is."""

    imported: LegacyImport
    backup: Path
    table: str

    @property
    def migrated(self) -> int:
        return self.imported.records


# -- the pure mapping --------------------------------------------------------------------------


def plan_migration(rows: Iterable[tuple[str, str]]) -> LegacyImport:
    """Map legacy key -> JSON rows to our records. Pure; never raises on bad rows."""
    out = LegacyImport()
    seen_ids: list[int] = []
    chat_rows: list[tuple[str, str, str, dict[str, object]]] = []
    for key, raw in sorted(rows):
        try:
            value = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        except (json.JSONDecodeError, UnicodeDecodeError):
            out.unmapped.append(f"{key}: value is not JSON")
            continue
        if key in SEQUENCE_KEYS:
            number = _as_int(value)
            if number is None:
                out.unmapped.append(f"{key}: not a number ({value!r})")
            else:
                seen_ids.append(number)
        elif key.startswith(USER_PREFIX):
            _map_user(out, key, key.removeprefix(USER_PREFIX), value)
        elif key.startswith(ROOM_PREFIX):
            room = _map_room(out, key, key.removeprefix(ROOM_PREFIX), value)
            if room is not None and room.platform_chat_id and room.platform_chat_id.isdigit():
                seen_ids.append(int(room.platform_chat_id))
        elif key.startswith(CHAT_PREFIX):
            user_id, sep, chat_id = key.removeprefix(CHAT_PREFIX).rpartition(":")
            if not sep or not user_id or not isinstance(value, dict):
                out.unmapped.append(f"{key}: not a chat:{{user}}:{{chat_id}} record")
                continue
            chat_rows.append((key, user_id, chat_id, value))
            number = _as_int(value.get("platform_chat_id"))
            if number is not None:
                seen_ids.append(number)
        else:
            out.unmapped.append(f"{key}: unknown key")
    for key, user_id, chat_id, value in chat_rows:
        _map_chat(out, key, user_id, chat_id, value)
    _fit_users(out)
    out.sequence_next = max([*seen_ids, 0]) + 1
    return out


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _as_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return str(value)
    return None


def _extra(out: LegacyImport, key: str, value: dict[str, object], known: set[str]) -> None:
    for name in sorted(set(value) - known):
        out.unmapped.append(f"{key}: field {name!r} not kept")


def _map_user(out: LegacyImport, key: str, user_id: str, value: object) -> None:
    if not isinstance(value, dict):
        out.unmapped.append(f"{key}: not a JSON object")
        return
    try:
        out.users[user_id] = UserRecord(
            matrix_user_id=user_id,
            space_id=_as_str(value.get("space_id")),
            next_chat_index=max(_as_int(value.get("next_chat_index")) or 1, 1),
            selected_agent_id=_as_str(value.get("selected_agent_id")),
        )
    except ValidationError as exc:
        out.unmapped.append(f"{key}: {exc.errors()[0]['msg']}")
        return
    _extra(out, key, value, _USER_FIELDS)


def _map_room(out: LegacyImport, key: str, room_id: str, value: object) -> RoomRecord | None:
    if not isinstance(value, dict):
        out.unmapped.append(f"{key}: not a JSON object")
        return None
    room_type = value.get("room_type", "chat")
    owner = _as_str(value.get("matrix_user_id"))
    if room_type not in ("chat", "space"):
        out.unmapped.append(f"{key}: room_type {room_type!r} is not a Space or chat")
        return None
    if owner is None:
        out.unmapped.append(f"{key}: no matrix_user_id")
        return None
    chat_id = _as_str(value.get("chat_id"))
    if room_type == "chat" and (chat_id is None or chat_index(chat_id) is None):
        out.unmapped.append(f"{key}: chat_id {chat_id!r} is not C<n>; the room is adopted anew")
        chat_id = None
    try:
        room = RoomRecord(
            room_id=room_id,
            room_type=RoomType(room_type),
            matrix_user_id=owner,
            space_id=_as_str(value.get("space_id")),
            chat_id=chat_id if room_type == "chat" else None,
            display_name=_as_str(value.get("display_name")),
            agent_id=_as_str(value.get("agent_id")),
            platform_chat_id=_as_str(value.get("platform_chat_id")),
            archived=bool(value.get("archived", False)),
        )
    except ValidationError as exc:
        out.unmapped.append(f"{key}: {exc.errors()[0]['msg']}")
        return None
    if room.room_type is RoomType.CHAT and room.chat_id is None:
        return None
    out.rooms[room_id] = room
    _extra(out, key, value, _ROOM_FIELDS)
    return room


def _map_chat(
    out: LegacyImport, key: str, user_id: str, chat_id: str, value: dict[str, object]
) -> None:
    room_id = _as_str(value.get("surface_ref") or value.get("room_id"))
    if room_id is None:
        out.unmapped.append(f"{key}: no room id (surface_ref)")
        return
    if chat_index(chat_id) is None:
        out.unmapped.append(f"{key}: chat id {chat_id!r} is not C<n>")
        return
    name = _as_str(value.get("name") or value.get("display_name")) or chat_id
    archived = bool(value.get("archived", False)) or value.get("status") == "archived"
    room = out.rooms.get(room_id)
    if room is None:
        # The room's own record is gone: keep what the chat entry knows (label, name,
        # owner); reconciliation adopts the room and fills in agent and platform chat.
        user = out.users.get(user_id)
        room = RoomRecord(
            room_id=room_id,
            room_type=RoomType.CHAT,
            matrix_user_id=user_id,
            space_id=user.space_id if user else None,
            chat_id=chat_id,
            display_name=name,
            archived=archived,
        )
        out.rooms[room_id] = room
    elif room.matrix_user_id != user_id or room.chat_id != chat_id:
        out.unmapped.append(f"{key}: disagrees with {ROOM_PREFIX}{room_id}; the room record kept")
        return
    out.chats[(user_id, chat_id)] = ChatRecord(
        matrix_user_id=user_id,
        chat_id=chat_id,
        room_id=room_id,
        display_name=room.display_name or name,
        archived=room.archived or archived,
    )


def _fit_users(out: LegacyImport) -> None:
    """Every room owner has a user; next_chat_index is above every chat of the user."""
    for room in out.rooms.values():
        user = out.users.get(room.matrix_user_id) or UserRecord(matrix_user_id=room.matrix_user_id)
        if room.room_type is RoomType.SPACE and user.space_id is None:
            user = user.model_copy(update={"space_id": room.room_id})
        index = chat_index(room.chat_id or "") or 0
        if user.next_chat_index <= index:
            user = user.model_copy(update={"next_chat_index": index + 1})
        out.users[user.matrix_user_id] = user


# -- finding and migrating the file ------------------------------------------------------------


def find_legacy_table(db: sqlite3.Connection) -> tuple[str, str, str] | None:
    """(table, key column, value column) of a key -> value table holding legacy keys."""
    tables = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in sorted(set(tables) - OUR_TABLES):
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({_quote(table)})")]
        if len(columns) != 2:
            continue
        key, value = columns
        placeholders = ", ".join("?" for _ in SEQUENCE_KEYS)
        hit = db.execute(
            f"SELECT 1 FROM {_quote(table)} WHERE {_quote(key)} LIKE 'matrix\\_user:%' ESCAPE '\\' "
            f"OR {_quote(key)} LIKE 'matrix\\_room:%' ESCAPE '\\' "
            f"OR {_quote(key)} LIKE 'chat:%' OR {_quote(key)} IN ({placeholders}) LIMIT 1",
            tuple(sorted(SEQUENCE_KEYS)),
        ).fetchone()
        if hit:
            return table, key, value
    return None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def detect_legacy(path: Path) -> tuple[str, str, str] | None:
    """The legacy table in the database at `path`, read-only; None for anything else."""
    try:
        with path.open("rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return None
    except OSError:
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except (sqlite3.Error, ValueError):
        return None
    try:
        return find_legacy_table(db)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def copy_database(source: Path, target: Path) -> Path:
    """Copy a database file (a consistent snapshot, WAL included), atomically, mode 0600."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    dest = sqlite3.connect(partial)
    try:
        src.backup(dest)
    finally:
        dest.close()
        src.close()
    os.replace(partial, target)
    return target


def _backup(path: Path) -> Path:
    """Keep the original beside the database, byte for byte (its -wal file too), once."""
    target = backup_path(path)
    if target.exists():  # an earlier, interrupted attempt already kept the original
        return target
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        _copy_file(wal, target.with_name(target.name + "-wal"))
    _copy_file(path, target)
    return target


def _copy_file(source: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)


def migrate_legacy_database(path: Path) -> MigrationResult | None:
    """Migrate the old key-value layout in `path` forward; None when there is none.

    Order: keep the original (``<name>.pre-migration``), create our schema (the store's
    own migrations; a corrupt or newer file is refused there), then one transaction
    that writes the records, raises the sequence, stores the report and drops the old
    table. A crash before that commit leaves the old table: the next start redoes it.
    Records already in our tables (a start of this bot before the upgrade was noticed)
    are kept; the legacy row is named in `unmapped` instead.
    """
    found = detect_legacy(path)
    if found is None:
        return None
    table, key_column, value_column = found
    backup = _backup(path)
    SqliteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT {_quote(key_column)}, {_quote(value_column)} FROM {_quote(table)}"
            ).fetchall()
            imported = plan_migration((str(k), v) for k, v in rows)
            _write(db, imported)
            set_meta(db, REPORT_META_KEY, json.dumps({"table": table, **imported.as_dict()}))
            db.execute(f"DROP TABLE {_quote(table)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()
    log.warning(
        "legacy_db.migrated",
        path=str(path),
        backup=str(backup),
        table=table,
        **imported.as_dict(),
    )
    return MigrationResult(imported=imported, backup=backup, table=table)


def _write(db: sqlite3.Connection, imported: LegacyImport) -> None:
    def exists(sql: str, *args: str) -> bool:
        return db.execute(sql, args).fetchone() is not None

    for user in imported.users.values():
        if exists("SELECT 1 FROM users WHERE matrix_user_id = ?", user.matrix_user_id):
            imported.unmapped.append(f"{USER_PREFIX}{user.matrix_user_id}: a record exists, kept")
        else:
            put_user(db, user)
    for room in imported.rooms.values():
        if exists("SELECT 1 FROM rooms WHERE room_id = ?", room.room_id):
            imported.unmapped.append(f"{ROOM_PREFIX}{room.room_id}: a record exists, kept")
        else:
            put_room(db, room)
    for chat in imported.chats.values():
        if not exists(
            "SELECT 1 FROM chats WHERE matrix_user_id = ? AND chat_id = ?",
            chat.matrix_user_id,
            chat.chat_id,
        ):
            put_chat(db, chat)
    raise_sequence_floor(db, imported.sequence_next)
