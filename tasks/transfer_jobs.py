"""The materializer's jobs and their results, and the pure functions that make them.

A :class:`DownloadJob` moves a media event's file into the room's inbox; an
:class:`UploadJob` posts a file an agent emitted to the room (tasks/materializer.py
runs them). Built here from a Matrix event (`download_job_for`) or an agent's
`EmittedFile` (`upload_job_for`, with a deterministic `upload_txn_id`); a job's
outcome is :class:`Downloaded`, :class:`Uploaded` or :class:`JobFailed` (`failure_of`
turns an error into the message the user sees). Also how a file is typed: its
mimetype (`choose_mimetype`) and the msgtype it is sent as (`media_msgtype`). No I/O.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass

from contracts.matrix import (
    MEDIA_MSGTYPES,
    JsonDict,
    MatrixError,
    MatrixEvent,
    MatrixRateLimited,
    MatrixUnreachable,
)
from contracts.platform import EmittedFile
from contracts.workspace import WorkspaceError

__all__ = [
    "DownloadJob",
    "Downloaded",
    "Job",
    "JobFailed",
    "JobResult",
    "UploadJob",
    "Uploaded",
    "choose_mimetype",
    "download_job_for",
    "failure_of",
    "media_msgtype",
    "upload_job_for",
    "upload_txn_id",
]

_MIMETYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
_DEFAULT_MIMETYPE = "application/octet-stream"


# -- jobs and results ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownloadJob:
    """Download one media event into the room's inbox.

    `timestamp_ms` is the event's ``origin_server_ts``: with `event_id` it
    fixes the file's path, which is what makes the job idempotent.
    """

    event_id: str
    room_id: str
    user_id: str
    mxc: str
    filename: str
    mimetype: str | None
    size: int | None  # as declared by the sender's client; checked again after download
    timestamp_ms: int
    # Encrypted media: the event's `file` object (url, key, iv, hashes); `mxc` is its url.
    file: JsonDict | None = None


@dataclass(frozen=True, slots=True)
class UploadJob:
    """Send a workspace file an agent emitted to a room.

    `txn_id` must be deterministic for this file of this turn (see
    `upload_txn_id`): a resend with the same `txn_id` is not posted twice.
    `mimetype` is the agent's claim; without it the file name decides.
    """

    room_id: str
    rel_path: str
    txn_id: str
    reply_to_event_id: str
    mimetype: str | None = None


Job = DownloadJob | UploadJob


@dataclass(frozen=True, slots=True)
class Downloaded:
    """The file is in the workspace at `rel_path`; `reused` when an earlier run wrote it."""

    job: DownloadJob
    rel_path: str
    size: int
    reused: bool


@dataclass(frozen=True, slots=True)
class Uploaded:
    """The file was posted as `event_id` (`msgtype`), its media at `mxc`."""

    job: UploadJob
    event_id: str
    mxc: str
    msgtype: str
    mimetype: str
    size: int


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The job did nothing lasting. `message` is for the user; `code` for logs/translations."""

    job: Job
    code: str
    message: str
    error: Exception


JobResult = Downloaded | Uploaded | JobFailed


# -- making jobs, typing files, failures ------------------------------------


def media_msgtype(mimetype: str) -> str:
    """The Matrix msgtype a file of `mimetype` is sent as."""
    major = mimetype.split("/", 1)[0].lower()
    return {"image": "m.image", "audio": "m.audio", "video": "m.video"}.get(major, "m.file")


def download_job_for(event: MatrixEvent, *, user_id: str | None = None) -> DownloadJob | None:
    """The job for a media message (plain `url` or encrypted `file`), or None when it is not one.

    The file name is the content's ``filename`` (when the body is a caption)
    or its ``body``; `user_id` defaults to the sender.
    """
    content = event.content
    if event.type != "m.room.message" or content.get("msgtype") not in MEDIA_MSGTYPES:
        return None
    url = content.get("url")
    file = content.get("file")
    if not isinstance(url, str) and isinstance(file, dict):
        url = file.get("url")  # encrypted media
    else:
        file = None
    if not isinstance(url, str) or not url.startswith("mxc://"):
        return None  # a malformed event
    filename = content.get("filename")
    if not isinstance(filename, str) or not filename:
        body = content.get("body")
        filename = body if isinstance(body, str) and body else str(content["msgtype"])[2:]
    info = content.get("info")
    info = info if isinstance(info, dict) else {}
    mimetype = info.get("mimetype")
    size = info.get("size")
    return DownloadJob(
        event_id=event.event_id,
        room_id=event.room_id,
        user_id=user_id or event.sender,
        mxc=url,
        filename=filename,
        mimetype=mimetype if isinstance(mimetype, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        timestamp_ms=event.origin_server_ts,
        file=file,
    )


def upload_txn_id(reply_to_event_id: str, index: int, rel_path: str) -> str:
    """A transaction id for the `index`-th file a turn emitted: same inputs, same id."""
    digest = hashlib.sha256(f"{reply_to_event_id}\0{index}\0{rel_path}".encode()).hexdigest()
    return f"lsfile-{digest[:32]}"


def upload_job_for(
    emitted: EmittedFile,
    *,
    room_id: str,
    reply_to_event_id: str,
    index: int,
) -> UploadJob:
    """The job that posts an agent's `EmittedFile` (the `index`-th of its turn)."""
    return UploadJob(
        room_id=room_id,
        rel_path=emitted.path,
        txn_id=upload_txn_id(reply_to_event_id, index, emitted.path),
        reply_to_event_id=reply_to_event_id,
        mimetype=emitted.mimetype,
    )


def choose_mimetype(claimed: str | None, name: str) -> str:
    if claimed and _MIMETYPE.match(claimed):
        return claimed.lower()
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or _DEFAULT_MIMETYPE


def failure_of(job: Job, error: Exception) -> JobFailed:
    if isinstance(error, WorkspaceError):
        return JobFailed(job, error.code, str(error), error)
    action = "download" if isinstance(job, DownloadJob) else "send"
    if isinstance(error, MatrixUnreachable | MatrixRateLimited):
        message = f"Could not {action} the file: the homeserver is not answering. Try again later."
        return JobFailed(job, "homeserver_unavailable", message, error)
    if isinstance(error, MatrixError):
        message = f"Could not {action} the file: the homeserver refused ({error.errcode or error})."
        return JobFailed(job, "homeserver_refused", message, error)
    return JobFailed(job, "internal_error", f"Could not {action} the file (internal error).", error)
