"""`surface reset`: forget the bot's state, for development and QA only.

local-only           delete the database (with its -wal/-shm files) and the nio store.
server-leave-forget  also make the bot leave and forget every room it is in.

Neither can touch the users' side: `manual_steps()` says what people must do
in their own clients.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from runtime.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class ResetPlan:
    mode: str
    files: list[Path] = field(default_factory=list)
    directories: list[Path] = field(default_factory=list)
    rooms_left: list[str] = field(default_factory=list)

    def describe(self, *, dry_run: bool) -> str:
        verb = "would delete" if dry_run else "will delete"
        lines = [f"reset --mode {self.mode}{' (dry run: nothing is changed)' if dry_run else ''}"]
        for path in self.files:
            lines.append(f"  {verb} file {path}")
        for path in self.directories:
            lines.append(f"  {verb} directory {path}")
        if not self.files and not self.directories:
            lines.append("  no local state found")
        if self.mode == "server-leave-forget":
            lines.append(
                f"  {'would' if dry_run else 'will'} make the bot leave and forget every room "
                "it has joined or is invited to"
            )
        lines.append(self.manual_steps())
        return "\n".join(lines)

    def manual_steps(self) -> str:
        steps = ["What people must still do in their Matrix clients:"]
        if self.mode == "local-only":
            steps += [
                "  - nothing: Spaces and chat rooms stay; on its next start the bot rebuilds "
                "its state from them (reconciliation), so this is not a clean slate.",
                "For a truly clean slate: `surface reset --mode server-leave-forget` (the bot "
                "leaves every room; people then leave theirs, see that mode's steps), or, with "
                "the quick-start homeserver of `just run` (MATRIX_HOMESERVER unset), stop the "
                "bot and delete its whole data directory (SURFACE_DEV_DATA_DIR, default "
                ".local/dev-homeserver): that Synapse holds every account, Space and room.",
            ]
        else:
            steps += [
                "  - each user: leave the 'Lambda — …' Space and its chat rooms (in Element: "
                "right-click the Space > Leave space > 'Leave all rooms'), then forget them;",
                "  - each user: start a new direct chat with the bot to get a fresh Space;",
                "  - the rooms stay on the homeserver until every member has left; an admin can "
                "purge them with the Synapse admin API (DELETE /_synapse/admin/v2/rooms/<id>).",
            ]
        return "\n".join(steps)


def plan_reset(settings: Settings, mode: str) -> ResetPlan:
    plan = ResetPlan(mode=mode)
    db = settings.matrix_db_path
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            plan.files.append(path)
    if settings.matrix_store_path.exists():
        plan.directories.append(settings.matrix_store_path)
    return plan


async def run_reset(settings: Settings, plan: ResetPlan) -> None:
    """Carry out the plan (server part first: it needs the stored session)."""
    if plan.mode == "server-leave-forget":
        await leave_and_forget_all(settings, plan)
    for path in plan.files:
        path.unlink(missing_ok=True)
        log.info("reset.deleted", path=str(path))
    for path in plan.directories:
        shutil.rmtree(path, ignore_errors=True)
        log.info("reset.deleted", path=str(path))


async def leave_and_forget_all(settings: Settings, plan: ResetPlan) -> None:
    from contracts.matrix import MatrixError
    from runtime.app import close_matrix, connect_matrix

    matrix = await connect_matrix(settings, "asyncio")
    try:
        batch = await matrix.sync(None, timeout_ms=0, full_state=False, timeline_limit=0)
        for room_id in [*batch.joined, *batch.invited]:
            try:
                await matrix.leave(room_id, reason="bot reset")
                await matrix.forget(room_id)
                plan.rooms_left.append(room_id)
                log.info("reset.left_room", room_id=room_id)
            except MatrixError as exc:
                log.warning("reset.leave_failed", room_id=room_id, error=str(exc))
        print(f"the bot left and forgot {len(plan.rooms_left)} room(s)")
    finally:
        await close_matrix(matrix)
