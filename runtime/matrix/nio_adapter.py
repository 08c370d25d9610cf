"""The Matrix port on top of matrix-nio (with its crypto side, runtime.matrix.e2ee, the only
modules of the project that import nio).

The pure conversions (raw JSON to contracts values, error answers to exceptions) are
in :mod:`runtime.matrix.parse`; raw HTTP requests go through the one helper in
:mod:`runtime.matrix.request`; logging the device in (session file, crypto store on
disk, stale devices) is :mod:`runtime.matrix.login`; this module holds the connection,
the crypto identity and nio's typed calls.

nio *returns* errors (``RoomSendResponse | RoomSendError``); every call here turns an
error response into one of the exceptions of :mod:`contracts.matrix`::

    MatrixError
    ├── MatrixAuthError      401, M_UNKNOWN_TOKEN, M_MISSING_TOKEN; on login also 403
    │                        (wrong password) and M_USER_DEACTIVATED; a whoami user
    │                        mismatch. Fatal: the configuration must be fixed.
    ├── MatrixRateLimited    429 / M_LIMIT_EXCEEDED, ``retry_after`` from retry_after_ms
    ├── MatrixUnreachable    aiohttp.ClientError, TimeoutError, 5xx, or a 2xx whose body
    │                        is not what the endpoint promises (a proxy page, say)
    └── MatrixRequestError   any other 4xx; download over ``max_bytes`` (M_TOO_LARGE)
        └── MatrixSyncTokenInvalid  a 400 from /sync with a ``since`` token

Who retries what:

- nio retries nothing. Its ``_send`` would by default retry connection errors and
  timeouts forever and sleep through 429s forever; ``max_timeouts=0`` and
  ``max_limit_exceeded=0`` make the first failure come back at once. A silent retry of
  ``createRoom`` after a timeout could also create the room twice.
- The caller (the runtime's supervisor) retries MatrixUnreachable with backoff and
  MatrixRateLimited after ``retry_after``; MatrixAuthError stops the bot;
  MatrixRequestError is reported and not retried.
- Message sends are safe to retry: the same ``txn_id`` (see ``tasks.replies.txn_id_for``) from the
  same device yields the same event, and the device survives restarts and re-logins
  because its id is kept in ``session.json``.

Endpoints whose answers must stay raw JSON (``/sync``, room state, ``/messages``,
account data), that nio cannot express (leave with a reason) and media (streamed,
with a size limit and a bounded timeout: nio's ``upload``/``download`` have no timeout
at all) go through :class:`runtime.matrix.request.RawRequests` on nio's own aiohttp
session. Raw JSON keeps every event, including custom ``lambda.surface.*`` state and
unknown message types, exactly as the server sent it, and spares nio from building its
own room model. Everything else uses nio's typed calls.

Every sync bypasses Synapse's two-minute ``/sync`` response cache (see
``runtime.matrix.sync_query``): a reconciler restarted within two minutes would otherwise
get its previous run's snapshot and miss the rooms it created since, and a bot killed
during a long-poll would, after restart, be served the cached empty answer for its
checkpoint over and over until the cache expires.

End-to-end encryption (:mod:`runtime.matrix.e2ee`): the crypto store lives in the store
directory beside ``session.json``, its keys encrypted with ``MATRIX_STORE_PASSPHRASE`` (or
a random key kept there in ``store.key``). Each sync answer's crypto content is absorbed
before :meth:`sync` returns, so the caller's checkpoint never runs ahead of the keys.
Messages to encrypted rooms are encrypted (relations stay in the clear); encrypted media
goes through :meth:`upload_encrypted` / :meth:`download_encrypted`. At start the device
is cross-signed by the bot itself (:mod:`runtime.matrix.cross_signing`); a resumed
session whose device the store directory records as signed skips that check before
ready, and the runtime runs it (:meth:`confirm_cross_signing`) once the bot is ready.

A lost crypto store cannot be recreated for the same device (its one-time keys are still
on the server): when ``session.json`` names a device whose keys the server knows but whose
store is gone, the bot logs in with the password as a **new device**, deletes the old one
(password UIA) and cross-signs the new one. Old encrypted history stays unreadable.

A device that was logged out (revoked token: ``run_bot`` logs in again with the password
under the same device id) comes back without keys on the server, since Synapse deletes a
device's keys with the device, while its store here is intact: the stored account says
its keys were uploaded, so nio would never publish them again and no client could
encrypt for the bot. At start the server's view decides: a device with a store but no
keys on the server publishes its account's keys again (the same identity keys, so the
Olm and Megolm sessions in the store keep working) and is cross-signed again.

``close()`` never logs out (the device and its transaction ids must outlive the process).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio
import nio
import structlog

from contracts.matrix import (
    JsonDict,
    MatrixEvent,
    MatrixRequestError,
    MatrixSyncTokenInvalid,
    MatrixUnreachable,
    MessagesPage,
    StateEventSpec,
    SyncBatch,
    Undecryptable,
)
from runtime.matrix.cross_signing import (
    CROSS_SIGNING_FILE,
    CrossSigningState,
    ensure_cross_signed,
    record_signed,
    signed_on_record,
)
from runtime.matrix.e2ee import E2ee
from runtime.matrix.login import DeviceLogin, private_files, store_pickle_key
from runtime.matrix.parse import (
    LoadedSync,
    as_dict,
    error_for,
    event_from_json,
    events_from_section,
    json_or_none,
    load_sync,
    split_mxc,
    sync_batch,
    sync_text,
)
from runtime.matrix.request import TRANSPORT_ERRORS, RawRequests
from runtime.matrix.sync_query import SNAPSHOT_TIMEOUT_S, SNAPSHOT_TIMEOUT_SPREAD, sync_query

__all__ = ["NioMatrix"]

log = structlog.get_logger(__name__)

_CLOSE_TIMEOUT_S: Final = 5.0
_DOWNLOAD_CHUNK: Final = 64 * 1024
_CLIENT_V3: Final = "/_matrix/client/v3"
_CLIENT_V1: Final = "/_matrix/client/v1"
_MEDIA_V3: Final = "/_matrix/media/v3"


def _path(*parts: str, base: str = _CLIENT_V3, query: Mapping[str, Any] | None = None) -> str:
    return str(nio.Api._build_path(list(parts), dict(query) if query else None, base))


# --- the adapter ----------------------------------------------------------------------


class NioMatrix:
    """MatrixPort on a logged-in ``nio.AsyncClient``. Create it with :meth:`connect`."""

    def __init__(
        self,
        client: Any,
        *,
        request_timeout: float,
        initial_sync_timeout: float,
        media_timeout: float,
    ) -> None:
        self._client = client
        self._raw = RawRequests(client, timeout=request_timeout)
        self._request_timeout = request_timeout
        self._initial_sync_timeout = initial_sync_timeout
        self._media_timeout = media_timeout
        self._sync_seq = secrets.randbelow(SNAPSHOT_TIMEOUT_SPREAD)
        self._e2ee: E2ee | None = None
        self.cross_signing: CrossSigningState | None = None
        # (password, store path) until the server was seen to show the device signed
        self._unconfirmed: tuple[str | None, Path] | None = None

    @classmethod
    async def connect(
        cls,
        *,
        homeserver: str,
        user_id: str,
        password: str | None,
        access_token: str | None,
        store_path: Path,
        device_name: str,
        store_passphrase: str | None = None,
        request_timeout: float = 30.0,
        initial_sync_timeout: float = SNAPSHOT_TIMEOUT_S,
        media_timeout: float = 120.0,
    ) -> NioMatrix:
        """Log in (or resume the stored session) and verify the token with whoami.

        A configured ``access_token`` wins and is not stored. Otherwise
        ``store_path/session.json`` is reused when it is for the same user and
        homeserver; if its token was revoked, the password logs in again as the same
        device. Raises MatrixAuthError (fatal: wrong password, revoked token without a
        password, the token belongs to another user) or MatrixUnreachable (retry).

        Then the crypto store is opened (a wrong ``store_passphrase`` is a
        MatrixAuthError: fatal), the device's keys are uploaded if they never were, and
        the device is cross-signed (see the module docstring).
        """
        homeserver = homeserver.rstrip("/")
        pickle_key = await anyio.to_thread.run_sync(store_pickle_key, store_path, store_passphrase)
        config = nio.AsyncClientConfig(
            max_timeouts=0,
            max_limit_exceeded=0,
            request_timeout=request_timeout,
            store_sync_tokens=False,
            encryption_enabled=True,
            pickle_key=pickle_key,
        )
        client = nio.AsyncClient(
            homeserver, user_id, device_id="", store_path=str(store_path), config=config
        )
        matrix = cls(
            client,
            request_timeout=request_timeout,
            initial_sync_timeout=initial_sync_timeout,
            media_timeout=media_timeout,
        )
        try:
            login = DeviceLogin(client, matrix._raw, matrix._call, _path)
            resumed = await login.log_in(
                homeserver=homeserver,
                user_id=user_id,
                password=password,
                access_token=access_token,
                store_path=store_path,
                device_name=device_name,
            )
            await matrix._start_e2ee(password=password, store_path=store_path, resumed=resumed)
        except BaseException:
            await matrix.close()
            raise
        return matrix

    async def _start_e2ee(self, *, password: str | None, store_path: Path, resumed: bool) -> None:
        """Keys uploaded if they never were, then the device cross-signed by the bot.

        A resumed session whose device the store directory records as signed by the keys
        on file skips the check (two to four requests before ready); the runtime asks
        `confirm_cross_signing` once the bot is ready, which repairs what changed.
        """
        e2ee = E2ee(self._client, self._raw, self._call, _path)
        self._e2ee = e2ee
        await anyio.to_thread.run_sync(private_files, store_path)
        if not e2ee.olm.account.shared:
            await e2ee.upload_keys()
        if password is None:
            log.warning(
                "e2ee.token_only",
                consequence="without MATRIX_PASSWORD the bot cannot replace its cross-signing "
                "keys or log in as a new device after losing its store; clients that accept "
                "only signed devices will not talk to an unsigned bot",
            )
        self._unconfirmed = (password, store_path)
        on_record = await anyio.to_thread.run_sync(self._signed_on_record, store_path)
        if resumed and e2ee.olm.account.shared and on_record:
            self.cross_signing = CrossSigningState.SIGNED
            log.info("e2ee.ready", device_id=self.device_id, cross_signed=True, on_record=True)
            return
        await self.confirm_cross_signing()

    async def confirm_cross_signing(self) -> CrossSigningState | None:
        """The server made to show this device cross-signed (start-up's check, or the one
        start-up skipped on the record's word); None without encryption. Idempotent:
        once confirmed it asks nothing. Raises MatrixUnreachable (the caller retries)."""
        if self._e2ee is None or self._unconfirmed is None:
            return self.cross_signing
        password, store_path = self._unconfirmed
        e2ee = self._e2ee
        state = await self._cross_sign(password, store_path)
        if state is CrossSigningState.NO_DEVICE_KEYS and e2ee.olm.account.shared:
            # The store says the keys were uploaded, the server has none: the device was
            # logged out (Synapse deletes a device's keys with it) and this login made it
            # again under the same id. The account is intact, so publish it once more.
            log.warning(
                "e2ee.device_keys_republished",
                device_id=self.device_id,
                reason="the server lost this device's keys (logged out and logged in again)",
            )
            e2ee.olm.account.shared = False
            await e2ee.upload_keys()
            state = await self._cross_sign(password, store_path)
        self.cross_signing = state
        self._unconfirmed = None
        if state is CrossSigningState.SIGNED:
            await anyio.to_thread.run_sync(self._record_signed, store_path)
            log.info("e2ee.ready", device_id=self.device_id, cross_signed=True)
        else:
            log.warning(
                "e2ee.device_not_cross_signed",
                device_id=self.device_id,
                state=state.value,
                consequence="clients that accept only signed devices (Element's 'exclude "
                "insecure devices') will not send this bot their room keys",
                fix="set MATRIX_PASSWORD" if password is None else "see the log above",
            )
        return state

    def _identity_key(self) -> str:
        assert self._e2ee is not None
        return str(self._e2ee.olm.account.identity_keys["ed25519"])

    def _signed_on_record(self, store_path: Path) -> bool:
        return signed_on_record(
            store_path,
            user_id=self.user_id,
            device_id=self.device_id,
            identity_key=self._identity_key(),
        )

    def _record_signed(self, store_path: Path) -> None:
        record_signed(
            store_path,
            user_id=self.user_id,
            device_id=self.device_id,
            identity_key=self._identity_key(),
        )

    async def _cross_sign(self, password: str | None, store_path: Path) -> CrossSigningState:
        return await ensure_cross_signed(
            self._raw,
            user_id=self.user_id,
            device_id=self.device_id,
            password=password,
            key_file=store_path / CROSS_SIGNING_FILE,
        )

    async def close(self) -> None:
        """Close the HTTP session. Never logs out: the device must survive restarts."""
        with anyio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
            await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def user_id(self) -> str:
        return str(self._client.user_id)

    @property
    def device_id(self) -> str:
        return str(self._client.device_id)

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]

    # --- plumbing -----------------------------------------------------------------

    async def _call(self, request: Awaitable[Any], *, login: bool = False) -> Any:
        """Await a nio call; return its success response or raise the mapped error."""
        try:
            response = await request
        except TRANSPORT_ERRORS as exc:
            raise MatrixUnreachable(f"homeserver unreachable: {exc!r}") from exc
        if not isinstance(response, nio.ErrorResponse):
            return response
        transport = response.transport_response
        status = transport.status if transport is not None else None
        if status is not None and 200 <= status < 300:
            raise MatrixUnreachable(f"unexpected answer: {response}", status=status)
        raise error_for(
            status,
            response.status_code,
            response.message,
            retry_after_ms=response.retry_after_ms,
            login=login,
        )

    # --- sync -----------------------------------------------------------------------

    async def sync(
        self,
        since: str | None,
        *,
        timeout_ms: int,
        full_state: bool = False,
        timeline_limit: int | None = None,
    ) -> SyncBatch:
        """One ``/sync``, converted from the raw JSON so no event is dropped.

        A full or initial sync is bounded by ``initial_sync_timeout`` (the server
        returns it without long-polling); an incremental one by ``timeout_ms`` plus
        ``request_timeout``. An initial or full-state sync always reflects the server's
        current state: it dodges Synapse's two-minute response cache (see
        ``runtime.matrix.sync_query``), which would otherwise hand a restarted bot the
        snapshot its previous run got.
        """
        snapshot = since is None or full_state
        self._sync_seq += 1
        query = sync_query(
            since,
            timeout_ms=timeout_ms,
            full_state=full_state,
            timeline_limit=timeline_limit,
            seq=self._sync_seq,
        )
        if snapshot:
            transport_timeout = self._initial_sync_timeout
        else:
            transport_timeout = timeout_ms / 1000 + self._request_timeout
        try:
            text = sync_text(
                await self._raw.read("GET", _path("sync", query=query), timeout=transport_timeout)
            )
        except MatrixRequestError as exc:
            if since is None or exc.status != 400:
                raise
            # Our query is fixed; a 400 on it is about the token (Synapse: M_UNKNOWN).
            raise MatrixSyncTokenInvalid(str(exc), errcode=exc.errcode, status=400) from exc
        loaded = load_sync(text)
        del text  # tens of MB for a full-state answer: not held while the batch is used
        return await self.batch_from_sync(loaded, complete_state=snapshot)

    async def batch_from_sync(
        self, loaded: LoadedSync, *, complete_state: bool = True
    ) -> SyncBatch:
        """A sync answer as a SyncBatch, its crypto content absorbed (persisted) first.

        Every sync answer goes through here, also one fetched elsewhere (the start-up
        snapshot, runtime/matrix/snapshot.py): its to-device messages and key counts
        must reach the crypto store before the caller stores its token.
        """
        batch = sync_batch(loaded, self.user_id)
        if self._e2ee is not None:
            self._e2ee.absorb(loaded.body, batch, complete_state=complete_state)
            await self._e2ee.housekeeping()
        return batch

    # --- rooms ----------------------------------------------------------------------

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
        """Create a private room (or Space); returns the room id.

        Not idempotent: after MatrixUnreachable the room may exist; look for it before
        creating again (tasks/rooms.py, ``find_created_room``).
        """
        response = await self._call(
            self._client.room_create(
                visibility=nio.RoomVisibility.private,
                name=name,
                topic=topic,
                preset=nio.RoomPreset.private_chat,
                invite=list(invite),
                initial_state=[
                    {"type": spec.type, "state_key": spec.state_key, "content": spec.content}
                    for spec in initial_state
                ],
                power_level_override=power_level_overrides,
                space=is_space,
            )
        )
        return str(response.room_id)

    async def send_state(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str = ""
    ) -> str:
        response = await self._call(
            self._client.room_put_state(room_id, event_type, content, state_key=state_key)
        )
        return str(response.event_id)

    async def send_message(
        self, room_id: str, content: JsonDict, *, txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        """Send a message event; the same txn_id from the same device is sent once.

        In an encrypted room the content is encrypted (``m.relates_to`` stays in the
        clear); the room key is shared with every device of every joined or invited
        member first.
        """
        e2ee = self._e2ee
        if e2ee is not None and await e2ee.is_encrypted(room_id):
            await e2ee.prepare_send(room_id)
            event_type, content = e2ee.encrypt(room_id, event_type, content)
        client = self._client
        method, path, data = nio.Api.room_send(
            client.access_token, room_id, event_type, content, txn_id
        )
        response = await self._call(
            client._send(nio.RoomSendResponse, method, path, data, (room_id,))
        )
        return str(response.event_id)

    async def set_typing(self, room_id: str, typing: bool, *, timeout_ms: int = 30000) -> None:
        await self._call(self._client.room_typing(room_id, typing, timeout=timeout_ms))

    async def send_receipt(self, room_id: str, event_id: str) -> None:
        """An ``m.read`` receipt (nio's ``room_read_markers`` also moves the fully-read marker)."""
        path = _path("rooms", room_id, "receipt", "m.read", event_id)
        await self._raw.json("POST", path, {})

    async def get_event(self, room_id: str, event_id: str) -> MatrixEvent:
        """``/rooms/{room}/event/{event}``, raw (the latest edit is in ``unsigned``)."""
        body = await self._raw.json("GET", _path("rooms", room_id, "event", event_id))
        event = event_from_json(body, room_id)
        if event is None:
            raise MatrixUnreachable("event answer is not an event", status=200)
        return event

    async def join(self, room_id: str) -> None:
        await self._call(self._client.join(room_id))

    async def leave(self, room_id: str, reason: str | None = None) -> None:
        # nio's room_leave cannot carry a reason.
        body: JsonDict = {"reason": reason} if reason else {}
        await self._raw.json("POST", _path("rooms", room_id, "leave"), body)

    async def forget(self, room_id: str) -> None:
        await self._call(self._client.room_forget(room_id))

    async def invite(self, room_id: str, user_id: str) -> None:
        await self._call(self._client.room_invite(room_id, user_id))

    async def room_state(self, room_id: str) -> list[MatrixEvent]:
        """The room's current state events, raw."""
        body = await self._raw.json("GET", _path("rooms", room_id, "state"))
        if not isinstance(body, list):
            raise MatrixUnreachable("room state answer is not a list", status=200)
        parsed = (event_from_json(raw, room_id) for raw in body)
        return [event for event in parsed if event is not None]

    async def joined_rooms(self) -> list[str]:
        """``/joined_rooms``: the rooms the bot is joined to."""
        body = as_dict(await self._raw.json("GET", _path("joined_rooms")))
        rooms = body.get("joined_rooms")
        if not isinstance(rooms, list):
            raise MatrixUnreachable("joined rooms answer has no list", status=200)
        return [room_id for room_id in rooms if isinstance(room_id, str)]

    async def room_messages(
        self, room_id: str, start: str | None, *, backwards: bool = True, limit: int = 100
    ) -> MessagesPage:
        """A page of ``/messages``; ``start=None`` starts at the end (backwards) or start.

        Events come in the order requested (newest first when backwards); ``end`` is
        None once the edge of the room is reached.
        """
        query: dict[str, Any] = {"dir": "b" if backwards else "f", "limit": limit}
        if start:
            query["from"] = start
        path = _path("rooms", room_id, "messages", query=query)
        body = as_dict(await self._raw.json("GET", path))
        end = body.get("end")
        return MessagesPage(
            events=events_from_section({"events": body.get("chunk")}, room_id),
            end=end if isinstance(end, str) else None,
        )

    # --- account data and profile ---------------------------------------------------

    async def get_account_data(self, event_type: str) -> JsonDict | None:
        """The global account data of this type, or None if it was never set."""
        try:
            body = await self._raw.json(
                "GET", _path("user", self.user_id, "account_data", event_type)
            )
        except MatrixRequestError as exc:
            if exc.status == 404:
                return None
            raise
        return as_dict(body)

    async def set_account_data(self, event_type: str, content: JsonDict) -> None:
        path = _path("user", self.user_id, "account_data", event_type)
        await self._raw.json("PUT", path, content)

    async def display_name(self, user_id: str) -> str | None:
        """The user's global display name; None if unset or the user is unknown."""
        try:
            response = await self._call(self._client.get_displayname(user_id))
        except MatrixRequestError as exc:
            if exc.status == 404:
                return None
            raise
        name = response.displayname
        return name if isinstance(name, str) and name else None

    # --- media ----------------------------------------------------------------------

    async def upload(self, data: bytes, *, content_type: str, filename: str) -> str:
        """Upload media; returns its mxc:// URI."""
        path = _path("upload", base=_MEDIA_V3, query={"filename": filename})
        async with self._raw.open(
            "POST", path, data, content_type=content_type, timeout=self._media_timeout
        ) as response:
            status = response.status
            parsed = json_or_none(await response.read())
        uri = as_dict(parsed).get("content_uri")
        if not isinstance(uri, str):
            raise MatrixUnreachable("upload answer without content_uri", status=status)
        return uri

    # --- end-to-end encryption (RoomCrypto and encrypted media) -------------------------

    def _crypto(self) -> E2ee:
        if self._e2ee is None:
            raise MatrixRequestError("end-to-end encryption is not set up", errcode="M_UNKNOWN")
        return self._e2ee

    @property
    def room_keys_received(self) -> int:
        return self._e2ee.room_keys_received if self._e2ee is not None else 0

    async def decrypt(self, event: MatrixEvent) -> MatrixEvent | Undecryptable:
        if self._e2ee is None:
            return Undecryptable(reason="end-to-end encryption is not set up")
        return await self._e2ee.decrypt(event)

    async def request_room_key(self, event: MatrixEvent) -> None:
        await self._crypto().request_room_key(event)

    async def wait_room_keys(self, seen: int) -> int:
        return await self._crypto().wait_room_keys(seen)

    async def room_is_encrypted(self, room_id: str) -> bool:
        return self._e2ee is not None and await self._e2ee.is_encrypted(room_id)

    async def upload_encrypted(self, data: bytes, *, content_type: str, filename: str) -> JsonDict:
        """Encrypt (AES-CTR, attachment v2) and upload; returns the `file` object."""
        ciphertext, file = await anyio.to_thread.run_sync(E2ee.encrypt_file, data)
        file["url"] = await self.upload(
            ciphertext, content_type="application/octet-stream", filename=filename
        )
        return file

    async def download_encrypted(self, file: JsonDict, *, max_bytes: int) -> bytes:
        url = file.get("url")
        if not isinstance(url, str):
            raise MatrixRequestError("encrypted file without url", errcode="M_BAD_FILE")
        ciphertext = await self.download(url, max_bytes=max_bytes)
        return await anyio.to_thread.run_sync(E2ee.decrypt_file, ciphertext, file)

    async def download(self, mxc_uri: str, *, max_bytes: int) -> bytes:
        """Download media (authenticated media API).

        Raises MatrixRequestError with errcode M_TOO_LARGE, without reading further,
        when the media is bigger than ``max_bytes``.
        """
        server, media_id = split_mxc(mxc_uri)
        path = _path("media", "download", server, media_id, base=_CLIENT_V1)
        too_large = MatrixRequestError(
            f"{mxc_uri} is larger than {max_bytes} bytes", errcode="M_TOO_LARGE"
        )
        received = bytearray()
        async with self._raw.open(
            "GET", path, content_type=None, timeout=self._media_timeout
        ) as response:
            if response.content_length is not None and response.content_length > max_bytes:
                raise too_large
            async for chunk in response.content.iter_chunked(_DOWNLOAD_CHUNK):
                received += chunk
                if len(received) > max_bytes:
                    raise too_large
        return bytes(received)
