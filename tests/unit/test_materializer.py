from __future__ import annotations

import errno
import io
import os
from pathlib import Path, PurePosixPath

import anyio
import anyio.lowlevel
import pytest
from fakes import FakeMatrix
from PIL import Image
from structlog.testing import capture_logs

from contracts.matrix import MatrixEvent, MatrixRequestError, MatrixUnreachable
from contracts.platform import EmittedFile
from runtime.store import SqliteStore
from runtime.workspace import FsWorkspace
from tasks.attachments import AttachmentStaging
from tasks.files.paths import room_directory
from tasks.materializer import REPLY_TO_KEY, Materializer, UploadMemo
from tasks.retry import Backoff
from tasks.transfer_jobs import (
    Downloaded,
    DownloadJob,
    Job,
    JobFailed,
    JobResult,
    Uploaded,
    UploadJob,
    download_job_for,
    media_msgtype,
    upload_job_for,
    upload_txn_id,
)

DEADLINE = 10.0
LIMIT = 1024
USER = "@alice:example.org"
ROOM = "!room:example.org"


def png(width: int, height: int, *, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "teal").save(out, format="PNG")
    return out.getvalue()


PNG = png(4, 3)
BIG = 1024 * 1024
NO_WAIT = Backoff(initial=0.0, max=0.0, jitter=0.0)


@pytest.fixture
def matrix() -> FakeMatrix:
    return FakeMatrix()


@pytest.fixture
def workspace(tmp_path: Path) -> FsWorkspace:
    return FsWorkspace(tmp_path / "ws")


def make_materializer(
    matrix: FakeMatrix,
    workspace: FsWorkspace,
    *,
    uploads: UploadMemo | None = None,
    staging: AttachmentStaging | None = None,
    max_transfers: int = 4,
    max_upload_bytes: int = LIMIT,
) -> Materializer:
    return Materializer(
        matrix,  # the fake implements the media part of MatrixPort
        workspace,
        max_upload_bytes=max_upload_bytes,
        uploads=uploads,
        staging=staging,
        max_transfers=max_transfers,
        backoff=NO_WAIT,
    )


@pytest.fixture
def materializer(matrix: FakeMatrix, workspace: FsWorkspace) -> Materializer:
    return make_materializer(matrix, workspace)


async def submit(materializer: Materializer, job: Job) -> JobResult:
    """Run a job as a room's task does: a direct call."""
    with anyio.fail_after(DEADLINE):
        return await materializer.process(job)


def download(
    matrix: FakeMatrix,
    data: bytes = PNG,
    *,
    event_id: str = "$upload1",
    room_id: str = ROOM,
    filename: str = "photo.png",
    size: int | None = None,
) -> DownloadJob:
    return DownloadJob(
        event_id=event_id,
        room_id=room_id,
        user_id=USER,
        mxc=matrix.add_media(data),
        filename=filename,
        mimetype="image/png",
        size=len(data) if size is None else size,
        timestamp_ms=1_700_000_000_000,
    )


def upload(rel_path: str, *, txn_id: str = "txn1", room_id: str = ROOM) -> UploadJob:
    return UploadJob(room_id=room_id, rel_path=rel_path, txn_id=txn_id, reply_to_event_id="$ask")


# -- downloads ---------------------------------------------------------------------


async def test_download_writes_the_bytes_at_the_inbox_path(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    result = await submit(materializer, download(matrix))

    assert isinstance(result, Downloaded)
    assert not result.reused
    path = PurePosixPath(result.rel_path)
    assert path.parent == room_directory(USER, ROOM) / "inbox"
    assert path.name.endswith("-photo.png")
    assert (workspace.root / result.rel_path).read_bytes() == PNG


async def test_download_rerun_reuses_the_file_without_downloading_again(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    job = download(matrix)
    first = await submit(materializer, job)

    again = await submit(materializer, job)

    assert isinstance(first, Downloaded)
    assert isinstance(again, Downloaded)
    assert again.rel_path == first.rel_path
    assert again.reused
    assert again.size == len(PNG)
    assert matrix.downloads == [job.mxc]
    assert len(list((workspace.root / first.rel_path).parent.iterdir())) == 1


async def test_declared_size_over_the_limit_is_refused_before_downloading(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    result = await submit(materializer, download(matrix, size=5 * 1024 * 1024))

    assert isinstance(result, JobFailed)
    assert result.code == "file_too_large"
    assert result.message == "“photo.png” is 5 MB; the limit is 1 KB."
    assert matrix.downloads == []


async def test_actual_size_over_the_limit_is_refused(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    lying = download(matrix, b"x" * (LIMIT + 1), size=10)

    result = await submit(materializer, lying)

    assert isinstance(result, JobFailed)
    assert result.code == "file_too_large"
    assert "the limit of 1 KB" in result.message
    assert not (workspace.root / "surfaces").exists()


async def test_disk_full_is_reported_clearly(
    materializer: Materializer, matrix: FakeMatrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)

    result = await submit(materializer, download(matrix))

    assert isinstance(result, JobFailed)
    assert result.code == "workspace_full"
    assert "no space left in the workspace" in result.message


async def test_two_rooms_never_share_a_directory(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    in_a = await submit(materializer, download(matrix, room_id="!a:example.org", event_id="$1"))
    in_b = await submit(materializer, download(matrix, room_id="!A:example.org", event_id="$1"))

    assert isinstance(in_a, Downloaded)
    assert isinstance(in_b, Downloaded)
    dir_a, dir_b = PurePosixPath(in_a.rel_path).parents[1], PurePosixPath(in_b.rel_path).parents[1]
    assert str(dir_a).casefold() != str(dir_b).casefold()


async def test_transient_homeserver_errors_are_retried(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    matrix.fail["download"] = [MatrixUnreachable("502"), MatrixUnreachable("timeout")]

    result = await submit(materializer, download(matrix))

    assert isinstance(result, Downloaded)
    assert matrix.fail["download"] == []


async def test_refused_download_is_not_retried(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    matrix.fail["download"] = [MatrixRequestError("forbidden", errcode="M_FORBIDDEN", status=403)]

    result = await submit(materializer, download(matrix))

    assert isinstance(result, JobFailed)
    assert result.code == "homeserver_refused"
    assert matrix.downloads == []


# -- uploads --------------------------------------------------------------------------


async def test_upload_sends_an_image_with_mimetype_size_and_reply_to(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("out/chart.png", PNG)

    result = await submit(materializer, upload("out/chart.png"))

    assert isinstance(result, Uploaded)
    [message] = matrix.sent
    assert message.room_id == ROOM
    assert message.txn_id == "txn1"
    assert message.content == {
        "msgtype": "m.image",
        "body": "chart.png",
        "filename": "chart.png",
        "url": result.mxc,
        "info": {"mimetype": "image/png", "size": len(PNG), "w": 4, "h": 3},
        REPLY_TO_KEY: "$ask",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$ask"}},
    }
    [uploaded] = matrix.uploads
    assert (uploaded.data, uploaded.content_type) == (PNG, "image/png")


async def test_a_large_image_gets_a_thumbnail_within_the_box(
    matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("out/wide.png", png(2000, 1000))
    materializer = make_materializer(matrix, workspace, max_upload_bytes=BIG)

    result = await submit(materializer, upload("out/wide.png"))

    assert isinstance(result, Uploaded)
    info = matrix.sent[0].content["info"]
    assert (info["w"], info["h"]) == (2000, 1000)
    [thumb_upload, image_upload] = matrix.uploads
    assert image_upload.mxc == result.mxc
    assert info["thumbnail_url"] == thumb_upload.mxc
    assert info["thumbnail_info"] == {
        "mimetype": "image/jpeg",
        "size": len(thumb_upload.data),
        "w": 800,
        "h": 400,
    }
    with Image.open(io.BytesIO(thumb_upload.data)) as thumb:
        assert thumb.size == (800, 400)


async def test_a_transparent_image_gets_a_png_thumbnail(
    matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("logo.png", png(1200, 1200, mode="RGBA"))

    await submit(make_materializer(matrix, workspace, max_upload_bytes=BIG), upload("logo.png"))

    info = matrix.sent[0].content["info"]
    assert info["thumbnail_info"]["mimetype"] == "image/png"
    assert (info["thumbnail_info"]["w"], info["thumbnail_info"]["h"]) == (600, 600)


async def test_an_image_pillow_cannot_read_is_sent_as_a_file(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)

    result = await submit(materializer, upload("broken.png"))

    assert isinstance(result, Uploaded)
    content = matrix.sent[0].content
    assert content["msgtype"] == "m.file"
    assert content["info"] == {"mimetype": "image/png", "size": 108}


async def test_a_replayed_image_reuses_its_thumbnail_too(
    matrix: FakeMatrix, workspace: FsWorkspace, tmp_path: Path
) -> None:
    workspace.write_atomic("big.png", png(1600, 1200))
    with SqliteStore(tmp_path / "state.db") as store:
        for _run in range(2):  # the second as after a crash: a fresh materializer
            running = make_materializer(matrix, workspace, uploads=store, max_upload_bytes=BIG)
            await submit(running, upload("big.png"))

    assert len(matrix.uploads) == 2, "the image and its thumbnail, each once"
    assert len(matrix.messages_in(ROOM)) == 1


async def test_upload_resend_with_the_same_txn_id_is_posted_once(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("report.pdf", b"%PDF-1.7")

    first = await submit(materializer, upload("report.pdf"))
    again = await submit(materializer, upload("report.pdf"))

    assert isinstance(first, Uploaded)
    assert isinstance(again, Uploaded)
    assert again.event_id == first.event_id
    assert len(matrix.messages_in(ROOM)) == 1
    assert matrix.sent[0].content["msgtype"] == "m.file"
    assert matrix.sent[0].content["info"]["mimetype"] == "application/pdf"


async def test_a_turn_replayed_after_a_crash_reuses_its_upload(
    matrix: FakeMatrix, workspace: FsWorkspace, tmp_path: Path
) -> None:
    workspace.write_atomic("out/chart.png", PNG)
    with SqliteStore(tmp_path / "state.db") as store:
        first = await submit(
            make_materializer(matrix, workspace, uploads=store), upload("out/chart.png")
        )
        after_restart = make_materializer(matrix, workspace, uploads=store)
        again = await submit(after_restart, upload("out/chart.png"))

        assert isinstance(first, Uploaded)
        assert isinstance(again, Uploaded)
        assert len(matrix.uploads) == 1
        assert (again.mxc, again.event_id) == (first.mxc, first.event_id)
        assert len(matrix.messages_in(ROOM)) == 1

        store.mark_done("$ask")  # the turn is over: nothing left to reuse
        assert store.uploaded_media("txn1") is None


async def test_an_upload_whose_message_failed_is_sent_on_the_retry_without_uploading_again(
    matrix: FakeMatrix, workspace: FsWorkspace, tmp_path: Path
) -> None:
    workspace.write_atomic("report.pdf", b"%PDF-1.7")
    matrix.fail["send_message"] = [MatrixRequestError("no", errcode="M_FORBIDDEN", status=403)]
    with SqliteStore(tmp_path / "state.db") as store:
        running = make_materializer(matrix, workspace, uploads=store)
        failed = await submit(running, upload("report.pdf"))
        retried = await submit(running, upload("report.pdf"))

    assert isinstance(failed, JobFailed)
    assert isinstance(retried, Uploaded)
    [uploaded] = matrix.uploads
    [message] = matrix.messages_in(ROOM)
    assert message["url"] == uploaded.mxc == retried.mxc


async def test_the_agents_mimetype_wins_over_the_extension(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("voice", b"OggS")
    job = upload_job_for(
        EmittedFile(path="voice", mimetype="audio/ogg"),
        room_id=ROOM,
        reply_to_event_id="$q",
        index=0,
    )

    result = await submit(materializer, job)

    assert isinstance(result, Uploaded)
    assert (result.msgtype, result.mimetype) == ("m.audio", "audio/ogg")


@pytest.mark.parametrize(
    ("rel_path", "reason"),
    [
        ("../outside.txt", "'..'"),
        ("/etc/passwd", "absolute"),
        ("linked/secret.txt", "symbolic link"),
        ("surfaces/matrix/someone/else/inbox/x.txt", "another room"),
    ],
)
async def test_unsafe_emitted_path_is_refused_with_a_logged_reason(
    materializer: Materializer,
    matrix: FakeMatrix,
    workspace: FsWorkspace,
    tmp_path: Path,
    rel_path: str,
    reason: str,
) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    (workspace.root / "linked").symlink_to(tmp_path)
    (tmp_path / "secret.txt").write_text("secret")

    with capture_logs() as logs:
        result = await submit(materializer, upload(rel_path))

    assert isinstance(result, JobFailed)
    assert result.code == "unsafe_path"
    assert "is not allowed" in result.message
    assert matrix.uploads == []
    assert matrix.sent == []
    [failure] = [e for e in logs if e["event"] == "materializer.job_failed"]
    assert reason in failure["reason"]


async def test_another_rooms_inbox_file_is_refused(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    theirs = await submit(materializer, download(matrix, room_id="!theirs:example.org"))
    assert isinstance(theirs, Downloaded)

    result = await submit(materializer, upload(theirs.rel_path))

    assert isinstance(result, JobFailed)
    assert result.code == "unsafe_path"
    assert matrix.sent == []


async def test_own_inbox_file_can_be_sent_back(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    mine = await submit(materializer, download(matrix))
    assert isinstance(mine, Downloaded)

    result = await submit(materializer, upload(mine.rel_path))

    assert isinstance(result, Uploaded)


async def test_emitted_file_over_the_limit_is_refused(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("big.bin", b"x" * (LIMIT * 2))

    result = await submit(materializer, upload("big.bin"))

    assert isinstance(result, JobFailed)
    assert result.message == "“big.bin” is 2 KB; the limit is 1 KB."
    assert matrix.uploads == []


async def test_missing_emitted_file_is_reported(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    result = await submit(materializer, upload("nowhere.txt"))

    assert isinstance(result, JobFailed)
    assert result.code == "file_not_found"


# -- concurrency: direct calls, bounded ----------------------------------------------------


class GatedMatrix(FakeMatrix):
    """Downloads of `slow_mxc` wait for `gate`: a big file still coming in."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.slow_mxc: str | None = None
        self.slow_started = anyio.Event()

    async def download(self, mxc_uri: str, *, max_bytes: int) -> bytes:
        if mxc_uri == self.slow_mxc:
            self.slow_started.set()
            await self.gate.wait()
        return await super().download(mxc_uri, max_bytes=max_bytes)


async def test_a_big_download_in_one_room_does_not_delay_an_upload_in_another(
    workspace: FsWorkspace,
) -> None:
    matrix = GatedMatrix()
    materializer = make_materializer(matrix, workspace)
    big = download(matrix, room_id="!a:example.org")
    matrix.slow_mxc = big.mxc
    workspace.write_atomic("out/chart.png", PNG)
    results: list[JobResult] = []

    async def room_a() -> None:
        results.append(await materializer.process(big))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(room_a)
            await matrix.slow_started.wait()

            uploaded = await materializer.process(upload("out/chart.png", room_id=ROOM))

            assert isinstance(uploaded, Uploaded)
            assert results == [], "the upload finished while the download was still running"
            matrix.gate.set()

    [downloaded] = results
    assert isinstance(downloaded, Downloaded)


async def test_transfers_beyond_the_limit_wait_for_a_slot(workspace: FsWorkspace) -> None:
    matrix = GatedMatrix()
    materializer = make_materializer(matrix, workspace, max_transfers=1)
    big = download(matrix, room_id="!a:example.org")
    matrix.slow_mxc = big.mxc
    workspace.write_atomic("out/chart.png", PNG)
    done: list[str] = []

    async def run(name: str, job: Job) -> None:
        await materializer.process(job)
        done.append(name)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "download", big)
            await matrix.slow_started.wait()
            tg.start_soon(run, "upload", upload("out/chart.png"))
            while materializer.statistics().waiting == 0:
                await anyio.lowlevel.checkpoint()

            assert (materializer.statistics().active, done) == (1, [])
            matrix.gate.set()

    assert done == ["download", "upload"]
    assert matrix.sent, "the upload ran once the slot was free"


async def test_a_bad_job_is_a_result_and_the_next_one_runs(
    materializer: Materializer, matrix: FakeMatrix
) -> None:
    bad = await submit(materializer, upload("../x"))
    good = await submit(materializer, download(matrix))

    assert isinstance(bad, JobFailed)
    assert isinstance(good, Downloaded)
    stats = materializer.statistics()
    assert (stats.downloaded, stats.failed, stats.active) == (1, 1, 0)


async def test_download_and_upload_are_typed_shortcuts_of_process(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    workspace.write_atomic("out/chart.png", PNG)

    with anyio.fail_after(DEADLINE):
        downloaded = await materializer.download(download(matrix))
        uploaded = await materializer.upload(upload("out/chart.png"))

    assert isinstance(downloaded, Downloaded)
    assert isinstance(uploaded, Uploaded)


# -- the supervised task: work nobody awaits -----------------------------------------------


@pytest.mark.trio_only
@pytest.mark.virtual_time
async def test_run_expires_staged_attachments_nobody_takes(
    matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    staging = AttachmentStaging(ttl=30.0)
    materializer = Materializer(
        matrix,
        workspace,
        max_upload_bytes=LIMIT,
        staging=staging,
        expiry_interval=60.0,
    )
    staging.stage(ROOM, "inbox/a.png")

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(materializer.run)
            await anyio.sleep(59.0)  # virtual: expired at 30 s, but not swept yet
            before_sweep = [e for e in logs if e["event"] == "materializer.staged_expired"]
            await anyio.sleep(2.0)
            tg.cancel_scope.cancel()

    assert before_sweep == []
    [expired] = [e for e in logs if e["event"] == "materializer.staged_expired"]
    assert expired["paths"] == 1
    assert staging.statistics().paths == 0


# -- helpers for the caller ----------------------------------------------------------


def _media_event(content: dict[str, object]) -> MatrixEvent:
    return MatrixEvent(
        event_id="$m",
        room_id=ROOM,
        sender=USER,
        type="m.room.message",
        content=content,
        origin_server_ts=1_700_000_000_123,
    )


def test_download_job_for_a_media_event() -> None:
    event = _media_event(
        {
            "msgtype": "m.image",
            "body": "look at this",
            "filename": "cat.jpg",
            "url": "mxc://example.org/abc",
            "info": {"mimetype": "image/jpeg", "size": 1234},
        }
    )

    job = download_job_for(event)

    assert job == DownloadJob(
        event_id="$m",
        room_id=ROOM,
        user_id=USER,
        mxc="mxc://example.org/abc",
        filename="cat.jpg",
        mimetype="image/jpeg",
        size=1234,
        timestamp_ms=1_700_000_000_123,
    )


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.text", "body": "hi"},
        {"msgtype": "m.file", "body": "f", "file": {"url": "https://evil.example/enc"}},
        {"msgtype": "m.file", "body": "f", "url": "https://evil.example/x"},
    ],
)
def test_download_job_for_ignores_other_events(content: dict[str, object]) -> None:
    assert download_job_for(_media_event(content)) is None


def test_download_job_for_tolerates_junk_info() -> None:
    event = _media_event({"msgtype": "m.file", "url": "mxc://x/y", "info": {"size": True}})

    job = download_job_for(event)

    assert job is not None
    assert (job.filename, job.size, job.mimetype) == ("file", None, None)


@pytest.mark.parametrize(
    ("mimetype", "msgtype"),
    [
        ("image/png", "m.image"),
        ("audio/ogg", "m.audio"),
        ("video/mp4", "m.video"),
        ("application/pdf", "m.file"),
        ("text/plain", "m.file"),
    ],
)
def test_media_msgtype(mimetype: str, msgtype: str) -> None:
    assert media_msgtype(mimetype) == msgtype


def test_upload_txn_id_is_deterministic_per_file_of_a_turn() -> None:
    assert upload_txn_id("$e", 0, "a.png") == upload_txn_id("$e", 0, "a.png")
    assert upload_txn_id("$e", 0, "a.png") != upload_txn_id("$e", 1, "a.png")
    assert upload_txn_id("$e", 0, "a.png") != upload_txn_id("$f", 0, "a.png")


# -- encrypted media ------------------------------------------------------------------


async def test_encrypted_media_is_decrypted_into_the_workspace(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    file = await matrix.upload_encrypted(PNG, content_type="image/png", filename="p.png")
    event = _media_event({"msgtype": "m.image", "body": "p.png", "file": file})
    job = download_job_for(event)
    assert job is not None and job.mxc == file["url"]

    result = await submit(materializer, job)

    assert isinstance(result, Downloaded)
    assert (workspace.root / result.rel_path).read_bytes() == PNG


async def test_encrypted_media_with_a_wrong_hash_is_refused(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    file = await matrix.upload_encrypted(PNG, content_type="image/png", filename="p.png")
    file["hashes"] = {"sha256": "0" * 64}
    job = download_job_for(_media_event({"msgtype": "m.image", "body": "p.png", "file": file}))
    assert job is not None

    result = await submit(materializer, job)

    assert isinstance(result, JobFailed)
    assert list(workspace.root.rglob("*.png")) == []


async def test_upload_into_an_encrypted_room_sends_a_file_object(
    materializer: Materializer, matrix: FakeMatrix, workspace: FsWorkspace
) -> None:
    room_id = matrix.add_room(matrix.user_id)
    await matrix.send_state(room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    workspace.write_atomic(f"{room_directory(USER, room_id)}/out/chart.png", PNG)
    workspace.write_atomic("out/chart.png", PNG)

    result = await submit(materializer, upload("out/chart.png", room_id=room_id))

    assert isinstance(result, Uploaded)
    [message] = matrix.sent
    assert "url" not in message.content
    file = message.content["file"]
    assert await matrix.download_encrypted(file, max_bytes=LIMIT) == PNG
    [uploaded] = matrix.uploads
    assert uploaded.data != PNG, "the homeserver only ever sees ciphertext"
    assert message.content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$ask"}}


async def test_an_encrypted_upload_replayed_after_a_crash_reuses_its_file_object(
    matrix: FakeMatrix, workspace: FsWorkspace, tmp_path: Path
) -> None:
    room_id = matrix.add_room(matrix.user_id)
    await matrix.send_state(room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    workspace.write_atomic("out/chart.png", PNG)
    matrix.fail["send_message"] = [MatrixRequestError("no", errcode="M_FORBIDDEN", status=403)]
    with SqliteStore(tmp_path / "state.db") as store:
        first_run = make_materializer(matrix, workspace, uploads=store)
        failed = await submit(first_run, upload("out/chart.png", room_id=room_id))
        after_restart = make_materializer(matrix, workspace, uploads=store)
        again = await submit(after_restart, upload("out/chart.png", room_id=room_id))

    assert isinstance(failed, JobFailed)
    assert isinstance(again, Uploaded)
    assert len(matrix.uploads) == 1, "the ciphertext is uploaded once"
    [message] = matrix.sent
    assert await matrix.download_encrypted(message.content["file"], max_bytes=LIMIT) == PNG
