"""What the rebuild decision (tasks/rebuild.py) takes and gives. Values only, no logic.

In: `LocalState`, the local records. Out: `RebuildPlan`, the records to write and
the Matrix-side work for the shell (tasks/reconcile.py), with its `ReconcileReport`
of what was restored, repaired, adopted (`Adoption`, tasks/adoption.py), filled,
relinked (`LinkRepair`), dropped and skipped (`Conflict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.markers import SpaceMarker
from contracts.matrix import JsonDict
from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord


@dataclass(frozen=True)
class Conflict:
    room_id: str
    reason: str


@dataclass(frozen=True)
class Adoption:
    """A marker-less room the bot created, taken over (see `adopt`)."""

    room_id: str
    room_type: RoomType
    owner: str
    chat_id: str | None = None
    source: str = "matrix"  # "legacy" when a local (migrated) record supplied the binding

    def as_dict(self) -> dict[str, object]:
        return {
            "room_id": self.room_id,
            "room_type": self.room_type.value,
            "owner": self.owner,
            "chat_id": self.chat_id,
            "source": self.source,
        }


@dataclass(frozen=True)
class LinkRepair:
    """A Space link state event to (re)write; the shell adds `via` (the bot's server)."""

    room_id: str  # the room the state event goes into
    event_type: str  # m.space.child (in the Space) or m.space.parent (in the chat room)
    state_key: str
    content: JsonDict  # the existing content to keep (order, canonical, ...), without via


@dataclass
class ReconcileReport:
    rooms_scanned: int = 0
    users_restored: int = 0
    rooms_restored: int = 0
    chats_restored: int = 0
    repaired: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: list[Conflict] = field(default_factory=list)
    sequence_floor: int = 1
    adopted: list[Adoption] = field(default_factory=list)
    ids_filled: list[str] = field(default_factory=list)  # room ids given a platform_chat_id
    links_repaired: list[LinkRepair] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # rooms the bot has left
    # Set by the runtime when it migrated a legacy key-value database at this start.
    migrated: int = 0
    unmapped: list[str] = field(default_factory=list)

    @property
    def local_changes(self) -> int:
        """Records written or deleted in the local store."""
        return (
            self.users_restored
            + self.rooms_restored
            + self.chats_restored
            + self.repaired
            + len(self.dropped)
        )

    @property
    def changes(self) -> int:
        """Everything this run changes, locally and in Matrix (0 on a second run)."""
        return (
            self.local_changes + len(self.adopted) + len(self.ids_filled) + len(self.links_repaired)
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "rooms_scanned": self.rooms_scanned,
            "users_restored": self.users_restored,
            "rooms_restored": self.rooms_restored,
            "chats_restored": self.chats_restored,
            "repaired": self.repaired,
            "conflicts": [{"room_id": c.room_id, "reason": c.reason} for c in self.conflicts],
            "skipped": [{"room_id": c.room_id, "reason": c.reason} for c in self.skipped],
            "sequence_floor": self.sequence_floor,
            "adopted": len(self.adopted),
            "adoptions": [a.as_dict() for a in self.adopted],
            "ids_filled": len(self.ids_filled),
            "links_repaired": len(self.links_repaired),
            "links": [
                {"room_id": link.room_id, "type": link.event_type, "state_key": link.state_key}
                for link in self.links_repaired
            ],
            "dropped": list(self.dropped),
            "migrated": self.migrated,
            "unmapped": list(self.unmapped),
            "changes": self.changes,
        }


@dataclass(frozen=True)
class LocalState:
    users: Mapping[str, UserRecord]
    rooms: Mapping[str, RoomRecord]
    chats: Mapping[tuple[str, str], ChatRecord]
    sequence_next: int = 1


@dataclass
class RebuildPlan:
    users: list[UserRecord] = field(default_factory=list)
    rooms: list[RoomRecord] = field(default_factory=list)
    chats: list[ChatRecord] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # trigger event id -> room id
    sequence_floor: int = 1
    report: ReconcileReport = field(default_factory=ReconcileReport)
    # Matrix-side work for the shell, after the records above are written:
    space_markers: list[SpaceMarkerWrite] = field(default_factory=list)
    room_markers: list[str] = field(default_factory=list)  # adopted chat rooms to mark
    fill_ids: list[str] = field(default_factory=list)  # chat rooms needing a platform_chat_id
    links: list[LinkRepair] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)  # local rooms the bot is not joined to


@dataclass(frozen=True)
class SpaceMarkerWrite:
    space_id: str
    marker: SpaceMarker
