"""Files between Matrix and the agents: the bot's side of the materializer.

A media message is downloaded into the room's inbox and staged; the room's
next text message carries the staged paths to the agent. Files an agent emits
are uploaded to the room. Both are direct calls into the materializer from the
room's own task (bounded across rooms by the materializer's limiter), so a
room's acknowledgements and files stay in order and no room waits behind
another room's transfer.
"""

from __future__ import annotations

import structlog

from contracts.matrix import MatrixEvent
from contracts.platform import EmittedFile
from contracts.state import RoomRecord
from contracts.store import LedgerEntry
from tasks.attachments import AttachmentStaging
from tasks.catalogue import Catalogue
from tasks.materializer import Materializer
from tasks.replies import Replier
from tasks.transfer_jobs import Downloaded, JobFailed, download_job_for, upload_job_for

log = structlog.get_logger(__name__)


class MediaBridge:
    def __init__(
        self,
        materializer: Materializer,
        staging: AttachmentStaging,
        replier: Replier,
        catalogue: Catalogue,
    ) -> None:
        self._materializer = materializer
        self._staging = staging
        self._replier = replier
        self._t = catalogue

    async def on_media(self, entry: LedgerEntry, room: RoomRecord) -> None:
        """Download a media message, stage it, and acknowledge it in the room."""
        event = MatrixEvent(
            event_id=entry.event_id,
            room_id=entry.room_id,
            sender=entry.sender,
            type=entry.type,
            content=entry.content,
            origin_server_ts=entry.origin_server_ts,
        )
        job = download_job_for(event, user_id=room.matrix_user_id)
        if job is None:
            await self._replier.say(
                room.room_id,
                self._t("file_error", reason="malformed media"),
                reply_to=entry.event_id,
            )
            return
        result = await self._materializer.download(job)
        if isinstance(result, Downloaded):
            self._staging.stage(room.room_id, result.rel_path)
            await self._replier.say(
                room.room_id, self._t("file_received", name=job.filename), reply_to=entry.event_id
            )
        else:
            await self._replier.say(
                room.room_id,
                self._t("file_error", reason=result.message),
                reply_to=entry.event_id,
            )

    def take_attachments(self, room_id: str) -> tuple[str, ...]:
        return self._staging.take(room_id)

    async def on_file(self, room_id: str, trigger: str, emitted: EmittedFile, index: int) -> None:
        """Upload a file the agent emitted; a refusal is told to the user."""
        job = upload_job_for(emitted, room_id=room_id, reply_to_event_id=trigger, index=index)
        result = await self._materializer.upload(job)
        if isinstance(result, JobFailed):
            await self._replier.say(
                room_id,
                self._t("file_error", reason=result.message),
                reply_to=trigger,
                purpose=f"file-error-{index}",
            )
