"""Fakes at the boundaries: a homeserver that records what the bot sent.

Shared by the unit tests; extend the classes here rather than writing mocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.matrix import JsonDict, MatrixError


@dataclass
class SentMessage:
    room_id: str
    content: JsonDict
    txn_id: str
    event_type: str
    event_id: str


@dataclass
class UploadedMedia:
    mxc: str
    data: bytes
    content_type: str
    filename: str


@dataclass
class FakeMatrix:
    """The media and message part of `contracts.matrix.MatrixPort`, in memory.

    - `media` maps mxc URIs to bytes; `download` serves them, `upload` adds to it;
    - `send_message` records into `sent` and, like a homeserver, sends one
      event per `txn_id` (a resend returns the first event id);
    - `fail` queues errors: the next call of the named method raises the first one.
    """

    user_id: str = "@bot:example.org"
    server_name: str = "example.org"
    media: dict[str, bytes] = field(default_factory=dict)
    uploads: list[UploadedMedia] = field(default_factory=list)
    sent: list[SentMessage] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    fail: dict[str, list[MatrixError]] = field(default_factory=dict)
    _by_txn: dict[str, str] = field(default_factory=dict)

    def add_media(self, data: bytes, name: str = "media") -> str:
        mxc = f"mxc://{self.server_name}/{name}{len(self.media)}"
        self.media[mxc] = data
        return mxc

    def _maybe_fail(self, method: str) -> None:
        queue = self.fail.get(method)
        if queue:
            raise queue.pop(0)

    async def download(self, mxc_uri: str, *, max_bytes: int) -> bytes:
        self._maybe_fail("download")
        self.downloads.append(mxc_uri)
        if mxc_uri not in self.media:
            raise MatrixError("not found", errcode="M_NOT_FOUND", status=404)
        data = self.media[mxc_uri]
        if len(data) > max_bytes:
            raise MatrixError("too large", errcode="M_TOO_LARGE", status=413)
        return data

    async def upload(self, data: bytes, *, content_type: str, filename: str) -> str:
        self._maybe_fail("upload")
        mxc = self.add_media(data, "upload")
        self.uploads.append(UploadedMedia(mxc, data, content_type, filename))
        return mxc

    async def send_message(
        self, room_id: str, content: JsonDict, *, txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        self._maybe_fail("send_message")
        if txn_id in self._by_txn:
            return self._by_txn[txn_id]
        event_id = f"$event{len(self.sent)}"
        self._by_txn[txn_id] = event_id
        self.sent.append(SentMessage(room_id, content, txn_id, event_type, event_id))
        return event_id

    def messages_in(self, room_id: str) -> list[JsonDict]:
        return [m.content for m in self.sent if m.room_id == room_id]
