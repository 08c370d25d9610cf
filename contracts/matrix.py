"""Matrix as the tasks see it: a small port plus plain event records.

The real implementation (runtime/matrix/nio_adapter.py) is the only module that
imports matrix-nio; tests pass a fake homeserver that records what was sent. Both
pass one behaviour suite, tests/contract/matrix_port.py (the fake in tests/unit, the
adapter on Synapse in tests/e2e); Synapse is the reference.

Errors, as a tree (nio *returns* errors; the adapter raises these):

    MatrixError                   any failed homeserver call
    ├── MatrixAuthError           invalid/revoked token, wrong password: fatal
    ├── MatrixRateLimited         429; `retry_after` seconds: retried
    ├── MatrixUnreachable         network error, timeout, 5xx: retried with backoff
    └── MatrixRequestError        other 4xx (M_FORBIDDEN, M_NOT_FOUND, ...): not retried
        └── MatrixSyncTokenInvalid  /sync refused its `since` token: sync again from scratch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

JsonDict = dict[str, Any]

# The m.room.message msgtypes that carry a file (downloaded, not routed as text).
MEDIA_MSGTYPES = frozenset({"m.file", "m.image", "m.audio", "m.video"})


class MatrixError(Exception):
    """A homeserver call failed."""

    def __init__(self, message: str, *, errcode: str | None = None, status: int | None = None):
        super().__init__(message)
        self.errcode = errcode
        self.status = status


class MatrixAuthError(MatrixError):
    """The bot's credentials are not accepted. Fatal: fix the configuration."""


class MatrixRateLimited(MatrixError):
    def __init__(self, message: str, *, retry_after: float, errcode: str | None = None):
        super().__init__(message, errcode=errcode, status=429)
        self.retry_after = retry_after


class MatrixUnreachable(MatrixError):
    """Network trouble or a 5xx: try again later."""


class MatrixRequestError(MatrixError):
    """The homeserver refused the request (4xx other than auth and rate limit)."""


class MatrixSyncTokenInvalid(MatrixRequestError):
    """`/sync` refused the `since` token (400: unknown or malformed, e.g. after a
    server-side reset). Retrying it cannot help; a sync without a token can."""


@dataclass(frozen=True, slots=True)
class MatrixEvent:
    """One room event, as received; `content` is the raw JSON content."""

    event_id: str
    room_id: str
    sender: str
    type: str
    content: JsonDict
    origin_server_ts: int = 0
    state_key: str | None = None
    unsigned: JsonDict = field(default_factory=dict)

    @property
    def is_state(self) -> bool:
        return self.state_key is not None


@dataclass(frozen=True, slots=True)
class JoinedRoom:
    room_id: str
    state: Sequence[MatrixEvent]  # state events (from both state and timeline sections)
    timeline: Sequence[MatrixEvent]  # timeline events, oldest first
    limited: bool = False
    prev_batch: str | None = None


@dataclass(frozen=True, slots=True)
class InvitedRoom:
    room_id: str
    inviter: str | None
    is_direct: bool
    state: Sequence[MatrixEvent]  # stripped state, event_id may be ""


@dataclass(frozen=True, slots=True)
class SyncBatch:
    next_batch: str
    joined: Mapping[str, JoinedRoom]
    invited: Mapping[str, InvitedRoom]
    left: Sequence[str] = ()
    account_data: Mapping[str, JsonDict] = field(default_factory=dict)
    # The homeserver answered MSC4222 `state_after` (the joined rooms' state as of the end
    # of their timelines): their state is current whatever the timeline window.
    state_after: bool = False


@dataclass(frozen=True, slots=True)
class MessagesPage:
    events: Sequence[MatrixEvent]  # in the order requested
    end: str | None  # token to continue, None at the start of the room


@dataclass(frozen=True, slots=True)
class StateEventSpec:
    type: str
    content: JsonDict
    state_key: str = ""


@dataclass(frozen=True, slots=True)
class Undecryptable:
    """An `m.room.encrypted` event the bot cannot read (now); `reason` is for the log."""

    reason: str
    session_id: str | None = None


class RoomCrypto(Protocol):
    """End-to-end encryption as the tasks see it (the nio adapter implements it).

    `room_keys_received` counts room keys that arrived since start; `wait_room_keys`
    returns once it is above `seen`, so a caller that read the counter before a failed
    decryption never misses a key that arrived in between.
    """

    @property
    def room_keys_received(self) -> int: ...

    async def decrypt(self, event: MatrixEvent) -> MatrixEvent | Undecryptable:
        """The plain event inside `event` (same id, sender, room and time), or why not."""
        ...

    async def request_room_key(self, event: MatrixEvent) -> None:
        """Ask the sender's devices for the key of `event` (once per session)."""
        ...

    async def wait_room_keys(self, seen: int) -> int: ...


class MatrixPort(Protocol):
    """The homeserver operations the bot uses. All raise MatrixError subclasses."""

    @property
    def user_id(self) -> str: ...

    @property
    def server_name(self) -> str:
        """The bot's own server name (for `via`); never parsed from a room id."""
        ...

    async def sync(
        self,
        since: str | None,
        *,
        timeout_ms: int,
        full_state: bool = False,
        timeline_limit: int | None = None,
    ) -> SyncBatch: ...

    async def create_room(
        self,
        *,
        name: str,
        invite: Sequence[str] = (),
        is_space: bool = False,
        initial_state: Sequence[StateEventSpec] = (),
        power_level_overrides: JsonDict | None = None,
        topic: str | None = None,
    ) -> str:
        """Create a private room (or Space); returns the room id."""
        ...

    async def send_state(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str = ""
    ) -> str: ...

    async def send_message(
        self, room_id: str, content: JsonDict, *, txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        """Send a message event; the same txn_id from the same session is sent once."""
        ...

    async def set_typing(self, room_id: str, typing: bool, *, timeout_ms: int = 30000) -> None: ...

    async def send_receipt(self, room_id: str, event_id: str) -> None:
        """Mark the room read up to `event_id` (an `m.read` receipt); repeating it is harmless."""
        ...

    async def get_event(self, room_id: str, event_id: str) -> MatrixEvent:
        """One event of a room the bot is in, as the server has it (`unsigned` included).

        Raises MatrixRequestError (404) for an event the bot cannot see.
        """
        ...

    async def join(self, room_id: str) -> None: ...

    async def leave(self, room_id: str, reason: str | None = None) -> None: ...

    async def forget(self, room_id: str) -> None: ...

    async def invite(self, room_id: str, user_id: str) -> None: ...

    async def room_state(self, room_id: str) -> list[MatrixEvent]: ...

    async def joined_rooms(self) -> list[str]:
        """The ids of the rooms the bot is joined to."""
        ...

    async def room_messages(
        self, room_id: str, start: str | None, *, backwards: bool = True, limit: int = 100
    ) -> MessagesPage: ...

    async def get_account_data(self, event_type: str) -> JsonDict | None: ...

    async def set_account_data(self, event_type: str, content: JsonDict) -> None: ...

    async def display_name(self, user_id: str) -> str | None: ...

    async def upload(self, data: bytes, *, content_type: str, filename: str) -> str:
        """Upload media; returns its mxc:// URI."""
        ...

    async def download(self, mxc_uri: str, *, max_bytes: int) -> bytes: ...

    async def room_is_encrypted(self, room_id: str) -> bool:
        """Whether messages to this room are encrypted (`m.room.encryption` in its state)."""
        ...

    async def upload_encrypted(self, data: bytes, *, content_type: str, filename: str) -> JsonDict:
        """Encrypt and upload media; returns the `file` object (url, key, iv, hashes)."""
        ...

    async def download_encrypted(self, file: JsonDict, *, max_bytes: int) -> bytes:
        """Download media sent as a `file` object and decrypt it (hash checked).

        Raises MatrixRequestError (errcode M_BAD_FILE) when the file object is malformed
        or the data does not match its hash.
        """
        ...
