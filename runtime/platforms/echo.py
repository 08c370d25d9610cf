"""In-process echo platform: the embedded default and the unit/e2e test agent.

Replies contain the user's text verbatim, streamed in a few deltas. Memory,
snapshots and turn de-duplication live in this process only. What it records for
inspection (`turns_seen`) and its replies by idempotency key keep the newest
`RECENT_TURNS` (up to twice that between trims): the embedded default runs for days,
and unbounded they grew the process by about 1 KiB per message (the benchmark soak).
"""

from __future__ import annotations

import itertools
import mimetypes
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio

from contracts.platform import (
    ContextInfo,
    EmittedFile,
    PlatformEvent,
    PlatformHealth,
    PlatformRejected,
    Snapshot,
    TextDelta,
    TurnDone,
    UserTurn,
)


@dataclass
class _Chat:
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user text, reply)


RECENT_TURNS = 1_000

EMIT = re.compile(r"!emit ([A-Za-z0-9_.-]{1,64})")
RETURN = "!return"


class EchoPlatform:
    """Answers `echo: <text>`; `delay` seconds per turn simulates a slow agent.

    With a `workspace`, `!emit <name>` in the text makes it write
    `agent-out/<name>` there and emit it as a file (like the reference service),
    and `!return` emits the turn's attachments back as they are.
    """

    def __init__(
        self, *, delay: float = 0.0, chunks: int = 3, workspace: Path | None = None
    ) -> None:
        self.delay = delay
        self.workspace = workspace
        self.chunks = max(1, chunks)
        self._chats: dict[tuple[str, str], _Chat] = {}
        self._replies: dict[str, str] = {}  # idempotency key -> recorded reply
        self._snapshots: dict[tuple[str, str], list[tuple[Snapshot, list[tuple[str, str]]]]] = {}
        self._ids = itertools.count(1)
        self.turns_seen: list[UserTurn] = []
        self.disconnected: list[tuple[str, str]] = []

    def _chat(self, agent_id: str, platform_chat_id: str) -> _Chat:
        return self._chats.setdefault((agent_id, platform_chat_id), _Chat())

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        self.turns_seen.append(turn)
        if len(self.turns_seen) > 2 * RECENT_TURNS:
            del self.turns_seen[:-RECENT_TURNS]
        reply = self._replies.get(turn.idempotency_key)
        if reply is None:
            if self.delay:
                await anyio.sleep(self.delay)
            chat = self._chat(turn.agent_id, turn.platform_chat_id)
            reply = f"echo: {turn.text}"
            if turn.attachments:
                reply += "\n\nattachments: " + ", ".join(turn.attachments)
            chat.turns.append((turn.text, reply))
            self._replies[turn.idempotency_key] = reply
            if len(self._replies) > 2 * RECENT_TURNS:  # insertion order: oldest first
                for key in list(itertools.islice(self._replies, RECENT_TURNS)):
                    del self._replies[key]
        step = max(1, -(-len(reply) // self.chunks))
        for start in range(0, len(reply), step):
            yield TextDelta(text=reply[start : start + step])
        if self.workspace is not None:
            for name in EMIT.findall(turn.text):
                yield self._emit(name, turn)
            if RETURN in turn.text:
                for path in turn.attachments:
                    yield EmittedFile(path=path, mimetype=mimetypes.guess_type(path)[0])
        yield TurnDone(text=reply)

    def _emit(self, name: str, turn: UserTurn) -> EmittedFile:
        relative = f"agent-out/{name}"
        assert self.workspace is not None
        target = self.workspace / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"file {name} for {turn.platform_chat_id}\n", encoding="utf-8")
        return EmittedFile(path=relative, mimetype="text/plain")

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        self.disconnected.append((agent_id, platform_chat_id))

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        chat = self._chat(agent_id, platform_chat_id)
        snap = Snapshot(
            snapshot_id=str(next(self._ids)),
            name=name,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            turns=len(chat.turns),
        )
        self._snapshots.setdefault((agent_id, owner), []).append((snap, list(chat.turns)))
        return snap

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        return [snap for snap, _ in self._snapshots.get((agent_id, owner), [])]

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        for snap, turns in self._snapshots.get((agent_id, owner), []):
            if snap.snapshot_id == snapshot_id:
                self._chats[(agent_id, platform_chat_id)] = _Chat(turns=list(turns))
                return await self.context_info(agent_id, platform_chat_id)
        raise PlatformRejected(f"no snapshot {snapshot_id!r} for this agent")

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        chat = self._chat(agent_id, platform_chat_id)
        snapshots = sum(
            1 for (aid, _), snaps in self._snapshots.items() if aid == agent_id for _ in snaps
        )
        return ContextInfo(
            agent_id=agent_id,
            platform_chat_id=platform_chat_id,
            turns=len(chat.turns),
            snapshots=snapshots,
            details={"backend": "in-process echo"},
        )

    async def health(self) -> PlatformHealth:
        return PlatformHealth(ok=True, version="echo", detail="in-process")
