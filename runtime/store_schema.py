"""The SQLite database's schema: ordered forward migrations, and the file's header.

`MIGRATIONS[n - 1]` takes a database from schema version n - 1 to n; SCHEMA_VERSION
is the newest. runtime/store.py applies them (and refuses a newer file).
"""

from __future__ import annotations

SQLITE_HEADER = b"SQLite format 3\x00"

# Ordered forward migrations: index + 1 is the schema version they produce.
MIGRATIONS: tuple[str, ...] = (
    # 1: users, rooms, chats, the platform-chat sequence, meta
    """
    CREATE TABLE users (
        matrix_user_id TEXT PRIMARY KEY,
        space_id TEXT,
        next_chat_index INTEGER NOT NULL DEFAULT 1,
        selected_agent_id TEXT
    );
    CREATE TABLE rooms (
        room_id TEXT PRIMARY KEY,
        room_type TEXT NOT NULL CHECK (room_type IN ('space', 'chat')),
        matrix_user_id TEXT NOT NULL,
        space_id TEXT,
        chat_id TEXT,
        display_name TEXT,
        agent_id TEXT,
        platform_chat_id TEXT,
        archived INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX rooms_by_user ON rooms (matrix_user_id);
    CREATE TABLE chats (
        matrix_user_id TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        display_name TEXT NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (matrix_user_id, chat_id)
    );
    CREATE TABLE sequence (
        name TEXT PRIMARY KEY,
        next_value INTEGER NOT NULL,
        reserved_through INTEGER NOT NULL
    );
    INSERT INTO sequence (name, next_value, reserved_through) VALUES ('platform_chat', 1, 0);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the exactly-once ledger of Matrix events and the sync checkpoint
    """
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        room_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        type TEXT NOT NULL,
        state_key TEXT,
        content TEXT NOT NULL,
        origin_server_ts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending'
    );
    CREATE INDEX ledger_pending ON ledger (status) WHERE status = 'pending';
    CREATE TABLE checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), next_batch TEXT NOT NULL);
    """,
    # 3: media uploaded for a turn still pending, so a replayed turn does not upload again
    """
    CREATE TABLE uploads (
        txn_id TEXT PRIMARY KEY,
        trigger_event_id TEXT NOT NULL,
        mxc TEXT NOT NULL
    );
    CREATE INDEX uploads_by_trigger ON uploads (trigger_event_id);
    """,
    # 4: a done entry keeps only what exactly-once needs (its id, room, status) and the
    # time it was done, so it can be pruned after the retention period
    """
    ALTER TABLE ledger ADD COLUMN done_at INTEGER;
    UPDATE ledger SET content = '{}', done_at = CAST(strftime('%s', 'now') AS INTEGER)
        WHERE status = 'done';
    CREATE INDEX ledger_done ON ledger (done_at) WHERE status = 'done';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
