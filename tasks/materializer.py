"""Moving files between Matrix and the shared workspace.

Awaited work is a direct call from the room's task: :meth:`Materializer.download`
and :meth:`Materializer.upload` run in the caller's task, bounded across all
rooms by one ``CapacityLimiter`` (``max_transfers``), so a big download in one
room does not hold up an upload in another. A room's own files stay in order
because the room's task awaits each before the next. The supervised task
(:meth:`Materializer.run`) keeps only the work nobody awaits: expiring staged
attachments.

The jobs, their results and the functions that make them: tasks/transfer_jobs.py.

- :class:`DownloadJob`: Matrix media -> ``<room dir>/inbox/<ts>-<event>-<name>``,
  written atomically. The path depends only on the event, so a re-run (after a
  crash, or a re-delivered event) finds the finished file and downloads nothing.
- :class:`UploadJob`: a file an agent emitted -> ``m.file``/``m.image``/
  ``m.audio``/``m.video`` in the room, with ``info`` (mimetype, size; for an
  image its ``w``/``h`` and, when large, a thumbnail: tasks/files/images.py) so
  clients show it inline; an ``image/*`` file Pillow cannot read goes as ``m.file``.
  The message is sent with the job's ``txn_id``, so a resend is deduplicated by
  the homeserver; the uploaded media (and thumbnail) is remembered (``UploadMemo``,
  the store) until the turn is done, so a turn replayed after a crash reuses it
  instead of leaving an orphan upload behind.

Retries (this module owns them for moving files; see tasks/retry.py): a
homeserver call of a transfer that fails as unreachable (network, 5xx) or rate
limited is tried up to ``attempts`` times in all, on ``backoff`` (a rate limit's
``retry_after`` is honoured). Everything else fails the transfer at once: too
large, unsafe path, disk full, a 4xx, bad credentials (the sync task meets
those too and stops the bot). A failed transfer is returned as
:class:`JobFailed` with a message for the user; a transfer never raises except
on cancellation.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from contracts.matrix import (
    JsonDict,
    MatrixError,
    MatrixPort,
    MatrixRateLimited,
    MatrixUnreachable,
)
from contracts.workspace import FileTooLarge, UnsafePath, Workspace
from tasks.attachments import AttachmentStaging
from tasks.files.images import ImageFacts, image_facts, make_thumbnail, needs_thumbnail
from tasks.files.paths import room_may_send, safe_component, safe_relative_path
from tasks.retry import Backoff, retry
from tasks.transfer_jobs import (
    Downloaded,
    DownloadJob,
    Job,
    JobFailed,
    JobResult,
    Uploaded,
    UploadJob,
    choose_mimetype,
    failure_of,
    media_msgtype,
)

__all__ = [
    "REPLY_TO_KEY",
    "Materializer",
    "MaterializerStatistics",
    "UploadMemo",
]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

# A thumbnail's upload is remembered under its image's txn id and this.
THUMBNAIL_MEMO_SUFFIX = ":thumbnail"
# Ties an emitted file to the user message that caused it (content key of the sent event).
REPLY_TO_KEY = "lambda.surface.reply_to"
# Three tries of a homeserver call in all, one and five seconds apart.
TRANSFER_BACKOFF = Backoff(initial=1.0, factor=5.0, max=5.0, jitter=0.1)
TRANSFER_ATTEMPTS = 3

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MaterializerStatistics:
    active: int  # transfers running now
    waiting: int  # transfers waiting for a free slot
    downloaded: int
    uploaded: int
    failed: int
    staged: int  # attachments staged for a room's next message


# -- the task -----------------------------------------------------------------


class UploadMemo(Protocol):
    """Media uploaded for a pending turn, by upload transaction id (the store keeps it)."""

    def uploaded_media(self, txn_id: str) -> str | None: ...
    def remember_upload(self, txn_id: str, trigger_event_id: str, mxc: str) -> None: ...


class Materializer:
    """Downloads and uploads for the rooms' tasks, and the supervised expiry of staged files.

    Call :meth:`download` / :meth:`upload` (or :meth:`process`) from the task
    that needs the result; at most ``max_transfers`` run at once across all
    rooms, the rest wait for a slot. Give :meth:`run` to the supervisor.
    """

    def __init__(
        self,
        matrix: MatrixPort,
        workspace: Workspace,
        *,
        max_upload_bytes: int,
        uploads: UploadMemo | None = None,
        staging: AttachmentStaging | None = None,
        max_transfers: int = 4,
        backoff: Backoff = TRANSFER_BACKOFF,
        attempts: int = TRANSFER_ATTEMPTS,
        expiry_interval: float = 60.0,
    ) -> None:
        if max_upload_bytes <= 0:
            raise ValueError("max_upload_bytes must be positive")
        if max_transfers < 1:
            raise ValueError("max_transfers must be at least 1")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if expiry_interval <= 0:
            raise ValueError("expiry_interval must be positive")
        self._matrix = matrix
        self._workspace = workspace
        self._uploads = uploads
        self._staging = staging
        self._max_bytes = max_upload_bytes
        self._limiter = anyio.CapacityLimiter(max_transfers)
        self._backoff = backoff
        self._attempts = attempts
        self._expiry_interval = expiry_interval
        self._downloaded = 0
        self._uploaded = 0
        self._failed = 0

    def statistics(self) -> MaterializerStatistics:
        limiter = self._limiter.statistics()
        staged = self._staging.statistics().paths if self._staging is not None else 0
        return MaterializerStatistics(
            active=limiter.borrowed_tokens,
            waiting=limiter.tasks_waiting,
            downloaded=self._downloaded,
            uploaded=self._uploaded,
            failed=self._failed,
            staged=staged,
        )

    # -- the supervised task: work nobody awaits ------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Expire staged attachments every ``expiry_interval`` seconds until cancelled.

        Restartable: it holds no state of its own.
        """
        task_status.started()
        log.info("materializer.ready", max_upload_bytes=self._max_bytes)
        while True:
            await anyio.sleep(self._expiry_interval)
            if self._staging is not None:
                expired = self._staging.expire()
                if expired:
                    log.info("materializer.staged_expired", paths=expired)

    # -- awaited work: called from the room's task ----------------------------

    async def download(self, job: DownloadJob) -> Downloaded | JobFailed:
        """Download one media event into the room's inbox; never raises except on cancellation."""
        result = await self.process(job)
        assert not isinstance(result, Uploaded)
        return result

    async def upload(self, job: UploadJob) -> Uploaded | JobFailed:
        """Post one file an agent emitted to the room; never raises except on cancellation."""
        result = await self.process(job)
        assert not isinstance(result, Downloaded)
        return result

    async def process(self, job: Job) -> JobResult:
        """Run one job in the caller's task, once a transfer slot is free; never raises
        except on cancellation."""
        async with self._limiter:
            try:
                if isinstance(job, DownloadJob):
                    result: JobResult = await self._download(job)
                else:
                    result = await self._upload(job)
            except Exception as error:  # a bad job is a result, not a crash; cancellation is not
                result = failure_of(job, error)
                self._failed += 1
                self._log_failure(result)
        return result

    def _log_failure(self, failure: JobFailed) -> None:
        job = failure.job
        fields: JsonDict = {"code": failure.code, "room_id": job.room_id}
        if isinstance(job, DownloadJob):
            fields.update(kind="download", event_id=job.event_id, mxc=job.mxc)
        else:
            fields.update(kind="upload", rel_path=job.rel_path, txn_id=job.txn_id)
        if isinstance(failure.error, UnsafePath):
            fields["reason"] = failure.error.reason
        if failure.code == "internal_error":
            log.error("materializer.job_failed", exc_info=failure.error, **fields)
        else:
            log.warning("materializer.job_failed", error=str(failure.error), **fields)

    async def _with_retries(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """`call()`, tried again while the homeserver is unreachable or rate limiting."""
        return await retry(
            call,
            self._backoff,
            retry_on=(MatrixUnreachable, MatrixRateLimited),
            attempts=self._attempts,
            operation=f"materializer.{what}",
        )

    async def _download(self, job: DownloadJob) -> Downloaded:
        rel_path = self._workspace.inbox_path(
            job.user_id, job.room_id, job.filename, job.timestamp_ms, event_id=job.event_id
        )
        name = safe_component(job.filename)
        if job.size is not None and job.size > self._max_bytes:
            raise FileTooLarge(name, limit=self._max_bytes, size=job.size)
        size = await anyio.to_thread.run_sync(self._workspace.file_size, rel_path)
        if size is not None:
            # Writes are atomic, so a file at this path is a finished earlier run.
            log.info("materializer.download_reused", event_id=job.event_id, rel_path=rel_path)
            self._downloaded += 1
            return Downloaded(job, rel_path, size, reused=True)
        try:
            if job.file is not None:
                fetch = partial(
                    self._matrix.download_encrypted, job.file, max_bytes=self._max_bytes
                )
            else:
                fetch = partial(self._matrix.download, job.mxc, max_bytes=self._max_bytes)
            data = await self._with_retries(fetch, "download")
        except MatrixError as error:
            if error.errcode == "M_TOO_LARGE":
                raise FileTooLarge(name, limit=self._max_bytes) from error
            raise
        if len(data) > self._max_bytes:
            raise FileTooLarge(name, limit=self._max_bytes, size=len(data))
        await anyio.to_thread.run_sync(self._workspace.write_atomic, rel_path, data)
        log.info(
            "materializer.downloaded",
            event_id=job.event_id,
            room_id=job.room_id,
            rel_path=rel_path,
            size=len(data),
        )
        self._downloaded += 1
        return Downloaded(job, rel_path, len(data), reused=False)

    async def _upload(self, job: UploadJob) -> Uploaded:
        path = safe_relative_path(job.rel_path)
        if not room_may_send(path, job.room_id):
            raise UnsafePath(job.rel_path, "it belongs to another room")
        rel_path = str(path)
        data = await anyio.to_thread.run_sync(self._workspace.read, rel_path, self._max_bytes)
        name = safe_component(path.name)
        mimetype = choose_mimetype(job.mimetype, path.name)
        msgtype = media_msgtype(mimetype)
        encrypted = await self._with_retries(
            partial(self._matrix.room_is_encrypted, job.room_id), "room_is_encrypted"
        )
        info: JsonDict = {"mimetype": mimetype, "size": len(data)}
        if msgtype == "m.image":
            facts = await anyio.to_thread.run_sync(image_facts, data)
            if facts is None:
                msgtype = "m.file"  # not an image a client could show inline
            else:
                info.update(await self._image_info(job, data, facts, encrypted=encrypted))
        media = await self._upload_media(job, data, mimetype, name, encrypted=encrypted)
        mxc = media if isinstance(media, str) else str(media["url"])
        content: JsonDict = {
            "msgtype": msgtype,
            "body": name,
            "filename": name,
            "info": info,
            REPLY_TO_KEY: job.reply_to_event_id,
            # In the clear even in an encrypted room: catch-up reads it (tasks/catchup.py).
            "m.relates_to": {"m.in_reply_to": {"event_id": job.reply_to_event_id}},
        }
        if isinstance(media, str):
            content["url"] = media
        else:
            content["file"] = media
        event_id = await self._with_retries(
            partial(self._matrix.send_message, job.room_id, content, txn_id=job.txn_id),
            "send_message",
        )
        log.info(
            "materializer.uploaded",
            room_id=job.room_id,
            rel_path=rel_path,
            event_id=event_id,
            msgtype=msgtype,
            size=len(data),
        )
        self._uploaded += 1
        return Uploaded(job, event_id, mxc, msgtype, mimetype, len(data))

    async def _image_info(
        self, job: UploadJob, data: bytes, facts: ImageFacts, *, encrypted: bool
    ) -> JsonDict:
        """`w`/`h`, and for a large image a thumbnail (uploaded once, like the media;
        encrypted in an encrypted room: `thumbnail_file` instead of `thumbnail_url`)."""
        info: JsonDict = {"w": facts.width, "h": facts.height}
        if not needs_thumbnail(facts, len(data)):
            return info
        thumb = await anyio.to_thread.run_sync(make_thumbnail, data)
        if thumb is None:
            return info
        name = "thumbnail." + ("png" if thumb.mimetype == "image/png" else "jpg")
        media = await self._upload_media(
            job,
            thumb.data,
            thumb.mimetype,
            name,
            encrypted=encrypted,
            memo_key=job.txn_id + THUMBNAIL_MEMO_SUFFIX,
        )
        if isinstance(media, str):
            info["thumbnail_url"] = media
        else:
            info["thumbnail_file"] = media
        info["thumbnail_info"] = {
            "mimetype": thumb.mimetype,
            "size": len(thumb.data),
            "w": thumb.width,
            "h": thumb.height,
        }
        return info

    async def _upload_media(
        self,
        job: UploadJob,
        data: bytes,
        mimetype: str,
        name: str,
        *,
        encrypted: bool,
        memo_key: str | None = None,
    ) -> str | JsonDict:
        """The media's mxc URI (or, encrypted, its `file` object): the one this job uploaded
        before a crash, else a new upload. The memo keeps a `file` object as JSON text.

        `memo_key`: what the upload is remembered under (default: the job's txn id).
        """
        key = memo_key or job.txn_id
        if self._uploads is not None:
            known = self._uploads.uploaded_media(key)
            if known is not None and known.startswith("{") == encrypted:
                log.info("materializer.upload_reused", room_id=job.room_id, txn_id=key)
                return json.loads(known) if encrypted else known
        media: str | JsonDict
        if encrypted:
            media = await self._with_retries(
                partial(self._matrix.upload_encrypted, data, content_type=mimetype, filename=name),
                "upload",
            )
            memo = json.dumps(media)
        else:
            media = await self._with_retries(
                partial(self._matrix.upload, data, content_type=mimetype, filename=name), "upload"
            )
            memo = media
        if self._uploads is not None:
            self._uploads.remember_upload(key, job.reply_to_event_id, memo)
        return media
