"""Notices the bot says once per room, durably: a restart does not say them again.

Kept in the store's meta table as `notice.<kind>:<room id>`; a forgotten notice
is an empty value (the meta table has no delete).
"""

from __future__ import annotations

from contracts.store import Store

FOREIGN = "foreign"  # "this room is not one of your chats" in a foreign room
NOT_ALLOWED = "not_allowed"  # "you are no longer on this bot's allow list"


def _key(kind: str, room_id: str) -> str:
    return f"notice.{kind}:{room_id}"


def given(store: Store, kind: str, room_id: str) -> bool:
    return bool(store.get_meta(_key(kind, room_id)))


def mark_given(store: Store, kind: str, room_id: str) -> None:
    store.set_meta(_key(kind, room_id), "1")


def forget(store: Store, kind: str, room_id: str) -> None:
    """Let the notice be said again (the condition it announced went away)."""
    if given(store, kind, room_id):
        store.set_meta(_key(kind, room_id), "")
