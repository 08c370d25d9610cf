"""End-to-end encryption on nio's Olm machine, driven by the adapter's raw ``/sync``.

The adapter does not run nio's sync loop, so it feeds the machine itself:

- :meth:`E2ee.absorb` takes the crypto part of each sync answer (to-device events, the
  one-time-key count, device-list changes, the encryption state and members of
  encrypted rooms) **before** the adapter returns the batch, so the caller stores the
  batch's sync token only after the room keys it carried are on disk. Everything the
  machine writes for one answer is one transaction of nio's store
  (``store.database.atomic()``): nio saves the Olm session that carried a room key and
  the key itself in separate writes, and a kill between them lost the key for good.
- One-time keys are replenished whenever the server's count is below the account's
  maximum, including a count of 0 (nio's own sync ignores 0, so a drained pool was never
  refilled); the account is saved before the upload, so a key the server hands out is
  never one the account forgot.
- Encrypted rooms are tracked with their joined *and invited* members, so a user invited
  to a new encrypted room can read the welcome; rooms that are not encrypted are not
  modelled. Until the bot first sends into a room, its members are a plain dict
  (`_Members`, user ids interned); the first send turns them into the nio ``MatrixRoom``
  in ``client.rooms`` that nio's encryption reads, and starts tracking the members'
  devices. A nio room with its members is about 2.5 KiB: at 10,000 rooms, most of them
  quiet, that was 25 MiB of the bot's memory after a start.
- :meth:`decrypt` and :meth:`request_room_key` serve tasks/encrypted.py; a key request
  goes to the sender's devices. A forwarded key is accepted when it comes from the
  device that created the session (nio accepts forwarded keys only from the bot's own
  verified devices; a Rust-crypto client re-sends a lost key that way).
- Attachments: AES-CTR v2 ``file`` objects (nio.crypto.attachments), hash checked.

Sends never wait for verification: every device of a member gets the room key
(``ignore_unverified_devices``); a bot cannot compare emoji with anyone. A room key is
marked shared only once every to-device request carrying it succeeded (nio's own
``share_group_session`` marks it shared even when a request failed, and the devices
it missed could never read the message); a failure raises for the caller's retry.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import nio
import structlog

from contracts.matrix import (
    JsonDict,
    MatrixError,
    MatrixEvent,
    MatrixRequestError,
    SyncBatch,
    Undecryptable,
)
from runtime.matrix.parse import as_dict
from runtime.matrix.request import Call, PathOf, RawRequests

__all__ = ["E2ee"]

log = structlog.get_logger(__name__)

MEGOLM: Final = "m.megolm.v1.aes-sha2"
_SEEN_TO_DEVICE_MAX: Final = 10_000


@dataclass(slots=True)
class _Members:
    """An encrypted room's members before the bot's first send into it."""

    users: dict[str, bool] = field(default_factory=dict)  # user id -> invited (not joined)
    synced: bool = False  # from a complete state: no need to ask the server for them


def _fold_member(users: dict[str, bool], event: MatrixEvent) -> None:
    """Fold one m.room.member event into a `_Members` dict."""
    membership = event.content.get("membership")
    if membership in ("join", "invite"):
        users[sys.intern(event.state_key or "")] = membership == "invite"
    elif membership in ("leave", "ban"):
        users.pop(event.state_key or "", None)


def _apply_membership(room: Any, event: MatrixEvent) -> bool:
    """Fold one m.room.member event into a nio MatrixRoom; True if the member set changed."""
    user_id = event.state_key or ""
    membership = event.content.get("membership")
    if membership in ("join", "invite"):
        invited = membership == "invite"
        present = room.users.get(user_id)
        if present is not None and present.invited == invited:
            return False
        if present is not None:
            room.remove_member(user_id)
        room.add_member(
            user_id,
            event.content.get("displayname"),
            event.content.get("avatar_url"),
            invited,
        )
        return present is None
    if membership in ("leave", "ban"):
        return bool(room.remove_member(user_id))
    return False


class E2ee:
    """The crypto side of one logged-in ``nio.AsyncClient`` whose store is loaded."""

    def __init__(self, client: Any, raw: RawRequests, call: Call, path: PathOf) -> None:
        self._client = client
        self._raw = raw
        self._call = call
        self._path = path
        self._plain_rooms: set[str] = set()
        # Encrypted rooms not sent into yet; the others are nio rooms in client.rooms.
        self._unsent: dict[str, _Members] = {}
        self._withheld: dict[str, str] = {}  # session id -> code of m.room_key.withheld
        self._requested: set[str] = set()
        # To-device events handled in this process: the start-up snapshot and the first
        # incremental sync from an older checkpoint both carry the undeleted ones, and an
        # Olm message decrypted twice looks like a broken session to nio.
        self._seen_to_device: dict[str, None] = {}
        self._room_keys_received = 0
        self._keys_arrived: anyio.Event | None = None
        self._keys_lock: anyio.Lock | None = None
        self._share_locks: dict[str, anyio.Lock] = {}
        self._accept_forwards_from_session_creators()

    @property
    def olm(self) -> Any:
        return self._client.olm

    @property
    def room_keys_received(self) -> int:
        return self._room_keys_received

    # --- the sync answer ----------------------------------------------------------------

    def absorb(self, body: Any, batch: SyncBatch, *, complete_state: bool) -> None:
        """Hand one sync answer's crypto content to the machine, persisted in one transaction.

        `complete_state`: the answer holds every room's full state (an initial or
        full-state sync), so a room seen without ``m.room.encryption`` is not encrypted.
        """
        body = as_dict(body)
        olm = self.olm
        arrived = 0
        to_device = as_dict(body.get("to_device")).get("events") or ()
        with self._client.store.database.atomic():
            for raw in to_device:
                arrived += self._to_device(raw)
            counts = body.get("device_one_time_keys_count")
            if isinstance(counts, dict):
                count = counts.get("signed_curve25519", 0)
                olm.uploaded_key_count = count if isinstance(count, int) else 0
            self._track_rooms(batch, complete_state=complete_state)
            device_lists = as_dict(body.get("device_lists"))
            changed = {
                user
                for key in ("changed", "left")
                for user in device_lists.get(key) or ()
                if isinstance(user, str)
            }
            if changed & olm.tracked_users:
                olm.add_changed_users(changed & olm.tracked_users)
            if to_device:  # an Olm pre-key message consumed a one-time key nio did not save
                olm.save_account()  # (every sync would pickle and write the account for nothing)
        if arrived:
            self._room_keys_received += arrived
            if self._keys_arrived is not None:
                self._keys_arrived.set()
                self._keys_arrived = None
            log.debug("e2ee.room_keys", received=arrived)

    def _to_device(self, raw: Any) -> int:
        """Handle one to-device event (once per process); 1 if it brought a room key."""
        if not isinstance(raw, dict) or not isinstance(raw.get("content"), dict):
            return 0
        fingerprint = hashlib.sha256(
            json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        if fingerprint in self._seen_to_device:
            return 0
        self._seen_to_device[fingerprint] = None
        if len(self._seen_to_device) > _SEEN_TO_DEVICE_MAX:
            del self._seen_to_device[next(iter(self._seen_to_device))]
        if raw.get("type") == "m.room_key.withheld":
            content = raw["content"]
            session_id, code = content.get("session_id"), content.get("code")
            if isinstance(session_id, str) and isinstance(code, str):
                self._withheld[session_id] = code
            return 0
        try:
            event = nio.ToDeviceEvent.parse_event(raw)
        except (KeyError, TypeError, ValueError) as exc:
            log.info("e2ee.to_device_unparsable", type=raw.get("type"), error=repr(exc))
            return 0
        if event is None or isinstance(event, nio.BadEvent | nio.UnknownBadEvent):
            return 0
        try:
            decrypted = self.olm.handle_to_device_event(event)
        except Exception as exc:  # one bad message must not stop the sync (it would recur)
            log.warning(
                "e2ee.to_device_failed",
                type=raw.get("type"),
                sender=raw.get("sender"),
                error=type(exc).__name__,
            )
            return 0
        if isinstance(decrypted, nio.RoomKeyEvent):  # ForwardedRoomKeyEvent is one too
            self._withheld.pop(decrypted.session_id, None)
            return 1
        return 0

    def _track_rooms(self, batch: SyncBatch, *, complete_state: bool) -> None:
        rooms = self._client.rooms
        for room_id in batch.left:
            if rooms.pop(room_id, None) is not None:
                self._client.invalidate_outbound_session(room_id)
            self._unsent.pop(room_id, None)
            self._plain_rooms.discard(room_id)
        for room_id, joined in batch.joined.items():
            members = [e for e in joined.state if e.type == "m.room.member" and e.state_key]
            nio_room = rooms.get(room_id)
            if nio_room is not None:
                changed = [_apply_membership(nio_room, event) for event in members]
                if any(changed):  # a new member must get a fresh key; a leaver must not read on
                    self._client.invalidate_outbound_session(room_id)
                self.olm.update_tracked_users(nio_room)
                continue
            unsent = self._unsent.get(room_id)
            if unsent is None:
                if not any(
                    e.type == "m.room.encryption" and e.state_key == "" for e in joined.state
                ):
                    # A room whose creation is in this answer (one the bot just made or
                    # joined) has all its state here too: no need to ask before a send.
                    created = any(e.type == "m.room.create" for e in joined.state)
                    if complete_state or created:
                        self._plain_rooms.add(room_id)
                    continue
                unsent = self._unsent[room_id] = _Members(synced=complete_state)
                self._plain_rooms.discard(room_id)
            for event in members:  # no outbound key exists before the first send
                _fold_member(unsent.users, event)

    def _nio_room(self, room_id: str) -> Any:
        """The room's nio MatrixRoom, made from its `_Members` at the first send."""
        nio_room = self._client.rooms.get(room_id)
        if nio_room is not None:
            return nio_room
        unsent = self._unsent.pop(room_id)
        nio_room = nio.MatrixRoom(room_id, self._client.user_id, encrypted=True)
        for user_id, invited in unsent.users.items():
            nio_room.add_member(user_id, None, None, invited)
        nio_room.members_synced = unsent.synced
        self._client.rooms[room_id] = nio_room
        self._client.encrypted_rooms.add(room_id)
        self.olm.update_tracked_users(nio_room)
        return nio_room

    # --- housekeeping after each sync ----------------------------------------------------

    async def housekeeping(self) -> None:
        """Upload one-time keys, send queued to-device messages.

        Device lists are queried (and Olm sessions claimed) only before a message is
        encrypted (`prepare_send`), not after every sync: nothing else needs them, and a
        query here would sit on the path of the messages of that sync (and of start-up:
        members without keys are asked about again at each start).
        Failures are logged and left for the next sync (the conditions persist).
        """
        try:
            if self.olm.should_upload_keys:
                await self.upload_keys()
            if self._client.outgoing_to_device_messages:
                for message in list(self._client.outgoing_to_device_messages):
                    await self._call(self._client.to_device(message))
        except MatrixError as exc:
            log.warning("e2ee.housekeeping_failed", error=str(exc))

    async def upload_keys(self) -> None:
        """Upload device keys (first time) and one-time keys up to the account's maximum."""
        olm = self.olm
        first = not olm.account.shared
        content = olm.share_keys()
        olm.save_account()  # the keys about to be published are on disk first
        method, path, data = nio.Api.keys_upload(self._client.access_token, content)
        response = await self._call(self._client._send(nio.KeysUploadResponse, method, path, data))
        log.info(
            "e2ee.keys_uploaded",
            device_keys=first,
            one_time_keys=len(content.get("one_time_keys", {})),
            count=response.signed_curve25519_count,
        )

    async def _query_and_claim(self) -> None:
        if self.olm.should_query_keys:
            await self._call(self._client.keys_query())
        if self._client.should_claim_keys:
            await self._call(self._client.keys_claim(self._client.get_users_for_key_claiming()))

    def _lock(self) -> anyio.Lock:
        if self._keys_lock is None:
            self._keys_lock = anyio.Lock()
        return self._keys_lock

    # --- sending -------------------------------------------------------------------------

    async def is_encrypted(self, room_id: str) -> bool:
        """Whether the room is encrypted; a room never seen in a sync is asked about once."""
        if room_id in self._client.rooms or room_id in self._unsent:
            return True
        if room_id in self._plain_rooms:
            return False
        try:
            await self._raw.json(
                "GET", self._path("rooms", room_id, "state", "m.room.encryption", "")
            )
        except MatrixRequestError as exc:
            if exc.status != 404:
                raise
            self._plain_rooms.add(room_id)
            return False
        if room_id not in self._client.rooms:  # a sync may have added it meanwhile
            self._unsent.setdefault(room_id, _Members())
        return True

    async def prepare_send(self, room_id: str) -> None:
        """Members known, their devices queried, Olm sessions claimed: ready to encrypt."""
        nio_room = self._nio_room(room_id)
        if not nio_room.members_synced:
            await self._load_members(nio_room)
        async with self._lock():
            await self._query_and_claim()
        if self.olm.should_share_group_session(room_id):
            lock = self._share_locks.setdefault(room_id, anyio.Lock())
            async with lock:
                if self.olm.should_share_group_session(room_id):
                    await self._share_room_key(room_id, list(nio_room.users))

    async def _share_room_key(self, room_id: str, users: list[str]) -> None:
        """Send the room's Megolm key to every device of `users` over Olm.

        Unlike nio's ``share_group_session`` a failed claim or to-device request raises
        (for the caller's retry) instead of marking the key shared with devices that
        never got it. The session stays unshared until every request succeeded; a retry
        sends only to the devices still missing it.
        """
        client, olm = self._client, self.olm
        missing = olm.get_missing_sessions(users)
        if missing:
            await self._call(client.keys_claim(missing))
        for sharing_with, to_device in olm.share_group_session_parallel(
            room_id, users, ignore_unverified_devices=True
        ):
            method, path, data = nio.Api.to_device(
                client.access_token, "m.room.encrypted", to_device, uuid.uuid4()
            )
            await self._call(
                client._send(
                    nio.ShareGroupSessionResponse, method, path, data, (room_id, sharing_with)
                )
            )
        olm.outbound_group_sessions[room_id].shared = True

    def encrypt(self, room_id: str, event_type: str, content: JsonDict) -> tuple[str, JsonDict]:
        """The `m.room.encrypted` event for this content (``m.relates_to`` in the clear)."""
        encrypted_type, encrypted = self._client.encrypt(room_id, event_type, content)
        return str(encrypted_type), dict(encrypted)

    async def _load_members(self, nio_room: Any) -> None:
        body = as_dict(
            await self._raw.json("GET", self._path("rooms", nio_room.room_id, "members"))
        )
        for raw in body.get("chunk") or ():
            raw = as_dict(raw)
            if raw.get("type") != "m.room.member" or not isinstance(raw.get("state_key"), str):
                continue
            _apply_membership(
                nio_room,
                MatrixEvent(
                    event_id="",
                    room_id=nio_room.room_id,
                    sender=str(raw.get("sender", "")),
                    type="m.room.member",
                    content=as_dict(raw.get("content")),
                    state_key=raw["state_key"],
                ),
            )
        nio_room.members_synced = True
        self.olm.update_tracked_users(nio_room)

    # --- receiving -----------------------------------------------------------------------

    def _megolm_event(self, event: MatrixEvent) -> Any:
        parsed = nio.MegolmEvent.from_dict(
            {
                "type": event.type,
                "content": event.content,
                "event_id": event.event_id,
                "sender": event.sender,
                "origin_server_ts": event.origin_server_ts,
                "room_id": event.room_id,
            }
        )
        if isinstance(parsed, nio.MegolmEvent):
            parsed.room_id = event.room_id
            return parsed
        return None

    async def decrypt(self, event: MatrixEvent) -> MatrixEvent | Undecryptable:
        megolm = self._megolm_event(event)
        if megolm is None:
            return Undecryptable(reason="not a Megolm event")
        session_id = megolm.session_id
        try:
            decrypted = self.olm.decrypt_megolm_event(megolm, event.room_id)
        except nio.EncryptionError as exc:
            withheld = self._withheld.get(session_id)
            reason = f"withheld by the sender: {withheld}" if withheld else str(exc)
            return Undecryptable(reason=reason, session_id=session_id)
        except Exception as exc:  # a malformed event is unreadable, not a crash
            return Undecryptable(reason=f"malformed: {type(exc).__name__}", session_id=session_id)
        source = as_dict(getattr(decrypted, "source", None))
        if isinstance(decrypted, nio.BadEvent | nio.UnknownBadEvent) or not source:
            return Undecryptable(reason="the decrypted payload is malformed", session_id=session_id)
        if source.get("room_id", event.room_id) != event.room_id:
            return Undecryptable(reason="the payload names another room", session_id=session_id)
        event_type = source.get("type")
        if not isinstance(event_type, str):
            return Undecryptable(reason="the payload has no type", session_id=session_id)
        return MatrixEvent(
            event_id=event.event_id,
            room_id=event.room_id,
            sender=event.sender,
            type=event_type,
            content=as_dict(source.get("content")),
            origin_server_ts=event.origin_server_ts,
            unsigned=event.unsigned,
        )

    async def wait_room_keys(self, seen: int) -> int:
        while self._room_keys_received <= seen:
            if self._keys_arrived is None:
                self._keys_arrived = anyio.Event()
            await self._keys_arrived.wait()
        return self._room_keys_received

    async def request_room_key(self, event: MatrixEvent) -> None:
        """Ask every device of the sender for the event's session key (once per session)."""
        megolm = self._megolm_event(event)
        if megolm is None:
            return
        session_id = megolm.session_id
        if session_id in self._requested or session_id in self.olm.outgoing_key_requests:
            return
        message = megolm.as_key_request(event.sender, self._client.device_id)
        method, path, data = nio.Api.to_device(
            self._client.access_token, message.type, message.as_dict(), uuid.uuid4()
        )
        await self._call(
            self._client._send(
                nio.RoomKeyRequestResponse,
                method,
                path,
                data,
                (session_id, session_id, event.room_id, megolm.algorithm),
            )
        )
        self._requested.add(session_id)

    def _accept_forwards_from_session_creators(self) -> None:
        olm = self.olm
        nio_check = olm._should_accept_forward

        def should_accept_forward(sender: str, sender_key: str, event: Any) -> bool:
            if nio_check(sender, sender_key, event):
                return True
            content = as_dict(as_dict(getattr(event, "source", None)).get("content"))
            request = olm.outgoing_key_requests.get(event.session_id)
            return (
                request is not None
                and event.algorithm == MEGOLM
                and request.room_id == event.room_id
                and content.get("sender_key") == sender_key  # the forwarder made the session
                and not content.get("forwarding_curve25519_key_chain")
            )

        olm._should_accept_forward = should_accept_forward

    # --- attachments -----------------------------------------------------------------------

    @staticmethod
    def encrypt_file(data: bytes) -> tuple[bytes, JsonDict]:
        """Ciphertext and the `file` object without its url."""
        ciphertext, info = nio.crypto.attachments.encrypt_attachment(data)
        return ciphertext, dict(info)

    @staticmethod
    def decrypt_file(ciphertext: bytes, file: JsonDict) -> bytes:
        """The plaintext of an encrypted attachment; MatrixRequestError M_BAD_FILE if it fails."""
        try:
            key = as_dict(file.get("key"))["k"]
            sha256 = as_dict(file.get("hashes"))["sha256"]
            iv = file["iv"]
            return bytes(nio.crypto.attachments.decrypt_attachment(ciphertext, key, sha256, iv))
        except (KeyError, TypeError, nio.EncryptionError) as exc:
            raise MatrixRequestError(
                f"encrypted file cannot be decrypted: {exc}", errcode="M_BAD_FILE"
            ) from exc
