"""TurnStreamer: one message per answer, edited at a bounded rate; failures said clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from itertools import pairwise

import anyio
import anyio.lowlevel
import pytest
from fakes import FakeMatrix, SentMessage
from structlog.testing import capture_logs

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import (
    JsonDict,
    MatrixError,
    MatrixRateLimited,
    MatrixRequestError,
    MatrixUnreachable,
)
from contracts.metrics import NullMetrics
from contracts.platform import (
    ContextInfo,
    EmittedFile,
    PlatformEvent,
    PlatformHealth,
    PlatformTimeout,
    PlatformUnavailable,
    Snapshot,
    StatusUpdate,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from tasks.answer_pacing import progress_interval
from tasks.catalogue import Catalogue
from tasks.failures import error_ref
from tasks.replies import MAX_EVENT_BYTES, content_bytes, txn_id_for
from tasks.room_signals import RoomSignals
from tasks.turns import TurnStreamer

ROOM = "!chat:example.org"
TRIGGER = "$user-message"


def turn(text: str = "hello") -> UserTurn:
    return UserTurn(agent_id="echo", platform_chat_id="7", text=text, idempotency_key=TRIGGER)


class ScriptedPlatform:
    """Plays a script: events, pauses (a float: sleep that long) and a final exception."""

    def __init__(self, script: Sequence[PlatformEvent | float | Exception]) -> None:
        self.script = list(script)

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        for step in self.script:
            if isinstance(step, Exception):
                raise step
            if isinstance(step, float):
                await anyio.sleep(step)
            else:
                yield step

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        pass

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        raise AssertionError("turn tests never touch snapshots")

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        return []

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        raise AssertionError("turn tests never touch snapshots")

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        return ContextInfo(agent_id=agent_id, platform_chat_id=platform_chat_id)

    async def health(self) -> PlatformHealth:
        return PlatformHealth(ok=True)


class RecordingMetrics(NullMetrics):
    def __init__(self) -> None:
        self.platform_errors: list[str] = []

    def platform_error(self, code: str) -> None:
        self.platform_errors.append(code)


def streamer(
    matrix: FakeMatrix,
    platform: ScriptedPlatform,
    *,
    edit_interval: float = 60.0,
    first_message_chars: int = 0,
    **kw: object,
) -> TurnStreamer:
    """A streamer that shows progress from the first flush (no held first message) unless told."""
    return TurnStreamer(
        matrix,
        platform,
        Catalogue("en"),
        edit_interval=edit_interval,
        first_message_chars=first_message_chars,
        **kw,  # type: ignore[arg-type]
    )


def edits_of(matrix: FakeMatrix, original: str) -> list[SentMessage]:
    return [m for m in matrix.sent if m.content.get("m.relates_to", {}).get("event_id") == original]


@pytest.mark.virtual_time
async def test_a_slow_stream_is_one_message_edited_at_a_bounded_rate(
    time_is_virtual: bool,
) -> None:
    # Virtual time on trio; on asyncio the same script a hundred times faster.
    scale = 1.0 if time_is_virtual else 0.01
    interval = 1.0 * scale
    words = [f"w{n} " for n in range(20)]
    script: list[PlatformEvent | float | Exception] = []
    for word in words:
        script += [TextDelta(text=word), 0.3 * scale]
    script.append(TurnDone())
    matrix = FakeMatrix()
    started = anyio.current_time()

    outcome = await streamer(matrix, ScriptedPlatform(script), edit_interval=interval).run(
        ROOM, turn()
    )

    elapsed = anyio.current_time() - started
    full = "".join(words)
    [first, *rest] = matrix.sent
    assert first.content["m.relates_to"] == {"m.in_reply_to": {"event_id": TRIGGER}}
    assert first.content[REPLY_TO_FIELD] == TRIGGER
    edits = edits_of(matrix, first.event_id)
    assert edits == rest, "everything after the first message edits it"
    assert len(edits) >= 2, "a slow answer shows progress"
    assert len(matrix.sent) <= elapsed / interval + 1, "no more than one send per interval"
    progress = [m.at for m in matrix.sent[:-1]]
    assert all(b - a >= interval for a, b in pairwise(progress))
    assert edits[-1].content["m.new_content"]["body"] == full
    assert outcome.text == full
    assert outcome.message_event_id == first.event_id


async def test_a_fast_stream_is_sent_as_one_message() -> None:
    script: list[PlatformEvent | float | Exception] = [TextDelta(text=f"{n} ") for n in range(50)]
    script.append(TurnDone())
    matrix = FakeMatrix()

    outcome = await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["body"] == outcome.text == "".join(f"{n} " for n in range(50))
    assert message.content["format"] == "org.matrix.custom.html"
    assert outcome.edits == 0


async def test_done_text_is_used_when_no_deltas_came() -> None:
    matrix = FakeMatrix()

    await streamer(matrix, ScriptedPlatform([TurnDone(text="**all** at once")])).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["formatted_body"] == "<p><strong>all</strong> at once</p>"


async def test_a_platform_error_shows_its_code_and_a_reference_not_its_detail() -> None:
    matrix = FakeMatrix()
    metrics = RecordingMetrics()
    error = PlatformTimeout("agent 'ref' at http://bot:hunter2@127.0.0.1:8931/?key=k3y is slow")

    with capture_logs() as logs:
        outcome = await streamer(matrix, ScriptedPlatform([error]), metrics=metrics).run(
            ROOM, turn()
        )

    [message] = matrix.sent
    ref = error_ref(TRIGGER)
    assert message.content["body"] == (
        f"⚠️ The agent could not answer (`timeout`, ref `{ref}`). Please try again in a moment."
    )
    assert message.content[REPLY_TO_FIELD] == TRIGGER
    [logged] = [line for line in logs if line["event"] == "platform.failed"]
    assert logged["ref"] == ref and logged["code"] == "timeout"
    assert "127.0.0.1:8931" in logged["detail"]
    assert "hunter2" not in logged["detail"] and "k3y" not in logged["detail"]
    assert outcome.error is not None
    assert metrics.platform_errors == ["timeout"]


async def test_a_platform_error_without_text_names_its_code() -> None:
    matrix = FakeMatrix()

    await streamer(matrix, ScriptedPlatform([PlatformUnavailable()])).run(ROOM, turn())

    assert "unavailable" in matrix.sent[0].content["body"]


async def test_turn_failed_shows_its_code_and_a_reference_not_the_platforms_words() -> None:
    matrix = FakeMatrix()
    failed = TurnFailed(
        code="upstream_error",
        message="the model endpoint answered HTTP 401: {'error': 'bad key sk-live-123'}",
    )
    metrics = RecordingMetrics()

    outcome = await streamer(matrix, ScriptedPlatform([failed]), metrics=metrics).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["body"] == (
        f"⚠️ The agent reported an error (`upstream_error`, ref `{error_ref(TRIGGER)}`)."
    )
    assert outcome.error == "upstream_error"
    assert metrics.platform_errors == ["upstream_error"]


async def test_a_platform_code_that_is_not_a_code_is_not_shown() -> None:
    matrix = FakeMatrix()
    failed = TurnFailed(code="see http://10.0.0.7/admin", message="x")

    await streamer(matrix, ScriptedPlatform([failed])).run(ROOM, turn())

    assert "10.0.0.7" not in matrix.sent[0].content["body"]
    assert "(`error`, ref" in matrix.sent[0].content["body"]


async def test_text_before_a_failure_is_still_shown() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [
        TextDelta(text="partial"),
        TurnFailed(code="oops", message="lost it"),
    ]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    bodies = sorted(m.content["body"] for m in matrix.sent)
    assert bodies == [
        "partial",
        f"⚠️ The agent reported an error (`oops`, ref `{error_ref(TRIGGER)}`).",
    ]


async def test_a_quick_answer_shows_no_typing() -> None:
    matrix = FakeMatrix()

    await streamer(matrix, ScriptedPlatform([TextDelta(text="hi"), TurnDone()])).run(ROOM, turn())

    assert [m.content["body"] for m in matrix.sent] == ["hi"]
    assert matrix.typing == []


@pytest.mark.virtual_time
async def test_typing_is_shown_when_the_agent_is_slow_and_cleared_after(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [
        1.0 * scale,
        TextDelta(text="hi"),
        TurnDone(),
    ]

    await streamer(matrix, ScriptedPlatform(script), typing_delay=0.3 * scale).run(ROOM, turn())

    assert matrix.typing == [(ROOM, True), (ROOM, False)]
    assert [m.content["body"] for m in matrix.sent] == ["hi"]


async def test_a_status_update_shows_typing_at_once() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [
        StatusUpdate(status="thinking"),
        TextDelta(text="hi"),
        TurnDone(),
    ]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert matrix.typing == [(ROOM, True), (ROOM, False)]


async def test_typing_failures_do_not_fail_the_turn() -> None:
    matrix = FakeMatrix()
    matrix.fail["set_typing"] = [MatrixUnreachable("502"), MatrixUnreachable("502")]
    script: list[PlatformEvent | float | Exception] = [
        StatusUpdate(status="thinking"),
        TextDelta(text="hi"),
        TurnDone(),
    ]

    outcome = await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert outcome.text == "hi"
    assert [m.content["body"] for m in matrix.sent] == ["hi"]
    assert matrix.fail["set_typing"] == [], "both typing changes were tried"


async def test_emitted_files_reach_the_file_handler() -> None:
    matrix = FakeMatrix()
    seen: list[tuple[str, str, str, int]] = []

    async def on_file(room_id: str, trigger: str, file: EmittedFile, number: int) -> None:
        seen.append((room_id, trigger, file.path, number))

    script: list[PlatformEvent | float | Exception] = [
        EmittedFile(path="out/a.txt"),
        EmittedFile(path="out/b.png", mimetype="image/png"),
        TurnDone(text="two files"),
    ]

    outcome = await streamer(matrix, ScriptedPlatform(script), on_file=on_file).run(ROOM, turn())

    assert seen == [(ROOM, TRIGGER, "out/a.txt", 1), (ROOM, TRIGGER, "out/b.png", 2)]
    assert outcome.files == ["out/a.txt", "out/b.png"]


async def test_running_the_same_turn_again_sends_nothing_new() -> None:
    # A crash after the answer went out: the re-handled turn reuses the transaction ids.
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [TextDelta(text="hi"), TurnDone()]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())
    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert len(matrix.sent) == 1


# -- homeserver trouble and the event size limit ----------------------------------------------


class FlakyMatrix(FakeMatrix):
    """Fails chosen `send_message` calls (1-based call numbers), whatever they carry."""

    def __init__(self, failures: dict[int, MatrixError], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.failures = failures
        self.calls = 0

    async def send_message(
        self, room_id: str, content: JsonDict, *, txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        self.calls += 1
        failure = self.failures.pop(self.calls, None)
        if failure is not None:
            await anyio.lowlevel.checkpoint()
            raise failure
        return await super().send_message(room_id, content, txn_id=txn_id, event_type=event_type)


def answers(matrix: FakeMatrix) -> list[str]:
    """The answer's messages as they read now (after their latest edit), in order."""
    texts: dict[str, str] = {}
    for message in matrix.sent:
        relates = message.content.get("m.relates_to", {})
        if relates.get("rel_type") == "m.replace":
            texts[relates["event_id"]] = message.content["m.new_content"]["body"]
        elif message.content.get("msgtype") == "m.text":
            texts[message.event_id] = message.content["body"]
    return list(texts.values())


def slow_script(text: str, *, pieces: int, pause: float) -> list[PlatformEvent | float | Exception]:
    step = -(-len(text) // pieces)
    script: list[PlatformEvent | float | Exception] = []
    for start in range(0, len(text), step):
        script += [TextDelta(text=text[start : start + step]), pause]
    return [*script, TurnDone()]


@pytest.mark.virtual_time
async def test_a_rate_limited_answer_is_sent_after_retry_after(time_is_virtual: bool) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    matrix = FakeMatrix()
    matrix.fail["send_message"] = [MatrixRateLimited("429", retry_after=5.0 * scale)]
    started = anyio.current_time()

    outcome = await streamer(matrix, ScriptedPlatform([TurnDone(text="hi")])).run(ROOM, turn())

    assert answers(matrix) == ["hi"]
    assert outcome.message_event_id == matrix.sent[0].event_id
    assert anyio.current_time() - started >= 5.0 * scale


@pytest.mark.virtual_time
async def test_a_5xx_on_the_first_send_is_retried_not_lost() -> None:
    matrix = FakeMatrix()
    matrix.fail["send_message"] = [MatrixUnreachable("502"), MatrixUnreachable("503")]

    await streamer(matrix, ScriptedPlatform([TurnDone(text="hi")])).run(ROOM, turn())

    assert answers(matrix) == ["hi"]
    assert matrix.fail["send_message"] == []


@pytest.mark.virtual_time
async def test_a_failed_progress_edit_is_skipped_and_the_final_text_arrives(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    text = "".join(f"w{n} " for n in range(12))
    matrix = FlakyMatrix({2: MatrixUnreachable("502"), 3: MatrixRateLimited("429", retry_after=0)})

    outcome = await streamer(
        matrix,
        ScriptedPlatform(slow_script(text, pieces=6, pause=1.5 * scale)),
        edit_interval=scale,
    ).run(ROOM, turn())

    assert answers(matrix) == [text] == [outcome.text]
    assert matrix.failures == {}, "both failures happened, on progress edits"


@pytest.mark.virtual_time
async def test_a_rate_limited_final_edit_is_retried(time_is_virtual: bool) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    script: list[PlatformEvent | float | Exception] = [
        TextDelta(text="first "),
        1.5 * scale,
        TextDelta(text="second"),
        TurnDone(),
    ]
    matrix = FlakyMatrix({2: MatrixRateLimited("429", retry_after=3.0 * scale)})

    await streamer(matrix, ScriptedPlatform(script), edit_interval=scale).run(ROOM, turn())

    assert answers(matrix) == ["first second"]
    [_, final] = matrix.sent
    assert final.txn_id == txn_id_for(TRIGGER, "answer-final")


async def test_a_refusal_reaches_the_caller_as_itself_not_in_a_group() -> None:
    matrix = FakeMatrix()
    matrix.fail["send_message"] = [MatrixRequestError("no", errcode="M_FORBIDDEN", status=403)]

    with pytest.raises(MatrixRequestError):
        await streamer(matrix, ScriptedPlatform([TurnDone(text="hi")])).run(ROOM, turn())


async def test_an_error_notice_survives_a_rate_limit() -> None:
    matrix = FakeMatrix()
    matrix.fail["send_message"] = [MatrixRateLimited("429", retry_after=0.0)]

    await streamer(matrix, ScriptedPlatform([TurnFailed(code="x", message="y")])).run(ROOM, turn())

    ref = error_ref(TRIGGER)
    assert [m.content["body"] for m in matrix.sent] == [
        f"⚠️ The agent reported an error (`x`, ref `{ref}`)."
    ]


LONG = "".join(
    f"Paragraph {n}: " + "lorem ipsum dolor sit amet, " * 12 + "\n\n" for n in range(120)
)


async def test_a_long_answer_arrives_whole_in_several_messages() -> None:
    assert len(LONG) > 40_000
    matrix = FakeMatrix()

    outcome = await streamer(matrix, ScriptedPlatform([TurnDone(text=LONG)])).run(ROOM, turn())

    parts = answers(matrix)
    assert "".join(parts) == LONG
    assert len(parts) == len(outcome.message_event_ids) == 2
    assert all(m.content[REPLY_TO_FIELD] == TRIGGER for m in matrix.sent)
    assert all(p.endswith("\n\n") for p in parts[:-1]), "cut at a paragraph break"


async def test_an_answer_in_an_encrypted_room_leaves_room_for_the_ciphertext() -> None:
    matrix = FakeMatrix()
    room_id = matrix.add_room(matrix.user_id)
    await matrix.send_state(room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})

    await streamer(matrix, ScriptedPlatform([TurnDone(text=LONG)])).run(room_id, turn())

    parts = answers(matrix)
    assert "".join(parts) == LONG
    # Encrypted, a content of n bytes travels as about 4n/3 bytes of base64.
    sizes = [content_bytes(m.content) for m in matrix.sent]
    assert all(4 * size // 3 + 1_024 <= MAX_EVENT_BYTES for size in sizes)
    assert max(sizes) > 4 * MAX_EVENT_BYTES // 3 // 3, "the parts are not needlessly small"


@pytest.mark.virtual_time
async def test_a_streamed_answer_moves_on_before_an_edit_outgrows_the_limit(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    matrix = FakeMatrix()
    script = slow_script(LONG, pieces=10, pause=1.5 * scale)

    outcome = await streamer(matrix, ScriptedPlatform(script), edit_interval=scale).run(
        ROOM, turn()
    )

    parts = answers(matrix)
    assert "".join(parts) == LONG == outcome.text
    assert len(parts) >= 3, "an edit holds about half of what a message holds"
    assert outcome.edits >= 2
    originals = set(outcome.message_event_ids)
    assert all(
        m.content["m.relates_to"]["event_id"] in originals
        for m in matrix.sent
        if "m.new_content" in m.content  # an edit (every message is also a rich reply)
    )


async def test_a_homeserver_with_a_lower_limit_still_gets_everything() -> None:
    matrix = FakeMatrix(max_event_bytes=20_000)

    await streamer(matrix, ScriptedPlatform([TurnDone(text=LONG)])).run(ROOM, turn())

    assert "".join(answers(matrix)) == LONG


async def test_an_answer_refused_at_every_size_is_said_in_the_room() -> None:
    matrix = FakeMatrix(max_event_bytes=2_000)  # a notice fits, no part of the answer does
    text = "word " * 4_000

    await streamer(matrix, ScriptedPlatform([TurnDone(text=text)])).run(ROOM, turn())

    notices = [m.content["body"] for m in matrix.sent]
    assert answers(matrix) == []
    assert all("refused" in n for n in notices)
    refused = sum(int(n.split("refused ")[1].split(" ")[0]) for n in notices)
    assert refused == len(text), "every character is accounted for"


async def test_running_a_long_turn_again_sends_nothing_new() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [TurnDone(text=LONG)]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())
    first = len(matrix.sent)
    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert len(matrix.sent) == first == 2
    assert len({m.txn_id for m in matrix.sent}) == 2


# -- one notification per answer: the first message waits for a substantial start ---------


@pytest.mark.virtual_time
async def test_the_first_message_waits_until_the_answer_has_a_substantial_start(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    words = [f"word{n:02} " for n in range(40)]  # 7 characters each
    script: list[PlatformEvent | float | Exception] = []
    for word in words:
        script += [TextDelta(text=word), 0.25 * scale]
    script.append(TurnDone())
    matrix = FakeMatrix()

    outcome = await streamer(
        matrix,
        ScriptedPlatform(script),
        edit_interval=scale,
        first_message_chars=100,
        first_message_wait=3600.0,
    ).run(ROOM, turn())

    first = matrix.sent[0]
    assert "m.new_content" not in first.content, "a message of its own, not an edit"
    assert len(first.content["body"]) >= 100, "the message that notifies carries a real start"
    assert outcome.text.startswith(first.content["body"])
    assert len(edits_of(matrix, first.event_id)) >= 1, "the rest still streams by edits"
    assert answers(matrix) == [outcome.text]


async def test_an_answer_complete_before_its_start_is_substantial_is_one_message() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [TextDelta(text="short "), 0.05]
    script += [TextDelta(text="answer"), TurnDone()]

    await streamer(
        matrix, ScriptedPlatform(script), edit_interval=0.01, first_message_chars=300
    ).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["body"] == "short answer"
    assert message.txn_id == txn_id_for(TRIGGER, "answer")


@pytest.mark.virtual_time
async def test_a_slow_trickle_is_shown_once_the_first_message_has_waited_long_enough(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    script: list[PlatformEvent | float | Exception] = [TextDelta(text="thinking")]
    script += [5.0 * scale, TextDelta(text=" more"), 5.0 * scale, TurnDone()]
    matrix = FakeMatrix()
    started = anyio.current_time()

    await streamer(
        matrix,
        ScriptedPlatform(script),
        edit_interval=scale,
        first_message_chars=300,
        first_message_wait=3.0 * scale,
    ).run(ROOM, turn())

    first = matrix.sent[0]
    assert first.content["body"] == "thinking"
    assert first.at - started < 5.0 * scale, "shown after the wait, before the answer ended"
    assert answers(matrix) == ["thinking more"]


# -- edit budget ---------------------------------------------------------------------------


def test_the_progress_interval_doubles_with_each_fifth_of_the_budget() -> None:
    assert [progress_interval(1.0, n, 50) for n in (0, 9, 10, 19, 20, 40, 49)] == [
        1.0,
        1.0,
        2.0,
        2.0,
        4.0,
        16.0,
        16.0,
    ]
    assert progress_interval(0.5, 3, 3) == 0.5 * 2**3, "a tiny budget still grows"


@pytest.mark.virtual_time
async def test_a_long_stream_edits_a_message_at_most_max_edits_times(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.002
    script: list[PlatformEvent | float | Exception] = []
    for n in range(200):
        script += [TextDelta(text=f"w{n} "), 1.0 * scale]
    script.append(TurnDone())
    matrix = FakeMatrix()

    outcome = await streamer(
        matrix, ScriptedPlatform(script), edit_interval=scale, max_edits=10
    ).run(ROOM, turn())

    [_, *edits] = matrix.sent
    assert len(edits) <= 10, "the cap holds, the final edit included"
    assert edits[-1].txn_id == txn_id_for(TRIGGER, "answer-final")
    assert answers(matrix) == [outcome.text]
    progress = [m.at for m in matrix.sent[:-1]]
    gaps = [b - a for a, b in pairwise(progress)]
    assert gaps[-1] > 2 * scale, "the interval grew during the stream"


def test_a_budget_without_room_for_the_final_edit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_edits"):
        TurnStreamer(FakeMatrix(), ScriptedPlatform([]), Catalogue("en"), max_edits=0)


class SentInMemory:
    """SentMessages in a dict (in the bot the store keeps them until the turn is done)."""

    def __init__(self) -> None:
        self.by_txn: dict[str, str] = {}

    def sent_message(self, txn_id: str) -> str | None:
        return self.by_txn.get(txn_id)

    def remember_sent_message(self, txn_id: str, trigger_event_id: str, event_id: str) -> None:
        self.by_txn[txn_id] = event_id


@pytest.mark.virtual_time
async def test_a_replay_finishes_the_message_an_earlier_run_left_partial(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    matrix = FakeMatrix()
    sent = SentInMemory()
    # The first run shows the start of the answer, then the bot dies.
    hanging = ScriptedPlatform([TextDelta(text="the start"), 3600.0])
    with anyio.move_on_after(5 * scale):
        await streamer(matrix, hanging, edit_interval=1 * scale, sent=sent).run(ROOM, turn())
    assert answers(matrix) == ["the start"]

    # The replay has the whole answer at once: its first flush is the final one.
    whole = ScriptedPlatform([TurnDone(text="the start and the end")])
    outcome = await streamer(matrix, whole, sent=sent).run(ROOM, turn())

    assert answers(matrix) == ["the start and the end"]
    assert outcome.message_event_id == matrix.sent[0].event_id
    assert [m.txn_id for m in matrix.sent] == [
        txn_id_for(TRIGGER, "answer"),
        txn_id_for(TRIGGER, "answer-final"),
    ]


async def test_a_replay_after_the_final_edit_sends_nothing_new() -> None:
    matrix = FakeMatrix()
    sent = SentInMemory()
    script: list[PlatformEvent | float | Exception] = [TurnDone(text=LONG)]

    await streamer(matrix, ScriptedPlatform(script), sent=sent).run(ROOM, turn())
    first = list(matrix.sent)
    await streamer(matrix, ScriptedPlatform(script), sent=sent).run(ROOM, turn())

    assert matrix.sent == first
    assert answers(matrix) == [m.content["body"] for m in first]


async def test_a_turn_replacing_an_earlier_answer_edits_it_and_sends_no_new_message() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [TextDelta(text="new answer"), TurnDone()]

    outcome = await streamer(matrix, ScriptedPlatform(script)).run(
        ROOM, turn(), replace="$old-answer"
    )

    [edit] = matrix.sent
    assert edit.content["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$old-answer"}
    assert edit.content["m.new_content"]["body"] == "new answer"
    assert edit.txn_id == txn_id_for(TRIGGER, "answer-final")
    assert outcome.message_event_id == "$old-answer"


async def test_a_turn_in_a_thread_sends_its_answer_into_the_thread() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [TextDelta(text="hi"), TurnDone()]
    threaded = turn().model_copy(update={"thread_id": "$root"})

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, threaded)

    [message] = matrix.sent
    assert message.content["m.relates_to"]["rel_type"] == "m.thread"
    assert message.content["m.relates_to"]["event_id"] == "$root"
    assert message.content["m.relates_to"]["m.in_reply_to"] == {"event_id": TRIGGER}


@pytest.mark.virtual_time
async def test_with_signals_typing_is_noted_not_awaited(time_is_virtual: bool) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    matrix = FakeMatrix()
    matrix.add_invite("@alice:example.org", room_id=ROOM)
    matrix.user_joins(ROOM, matrix.user_id)
    signals = RoomSignals(matrix)
    script: list[PlatformEvent | float | Exception] = [1.0 * scale, TextDelta(text="hi")]
    slow = streamer(matrix, ScriptedPlatform(script), typing_delay=0.3 * scale, signals=signals)

    async with anyio.create_task_group() as tg:
        await tg.start(signals.run)
        with signals.handling():
            await slow.run(ROOM, turn())
        with anyio.fail_after(5):
            while True:
                if len(matrix.typing) >= 2:
                    break
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()

    assert matrix.typing == [(ROOM, True), (ROOM, False)]
    assert [m.content["body"] for m in matrix.sent] == ["hi"]


async def test_with_signals_a_turn_over_before_its_typing_went_out_shows_none() -> None:
    matrix = FakeMatrix()
    signals = RoomSignals(matrix)  # its sender not started: nothing went out yet
    script: list[PlatformEvent | float | Exception] = [StatusUpdate(status="thinking")]

    await streamer(matrix, ScriptedPlatform(script), signals=signals).run(ROOM, turn())
    await signals.flush()

    assert matrix.typing == []
    assert signals.statistics().typing_skipped == 1
