"""The reconciliation's full-state /sync, sent before the bot's heavy imports.

A start spends about a second importing (matrix-nio alone about half of it, then
aiohttp and the tasks) before its first request, and reconciliation then waits
seconds for Synapse to compute the full-state sync of every room. The two need not
wait for each other: with a stored session (or a configured access token),
`SnapshotPrefetch.start` sends exactly that sync from a worker thread with the
standard library as soon as the settings are read, and reconciliation takes the
answer (`take`) instead of asking again. Synapse computes while Python imports.

The answer is used only if it is what reconciliation would have asked for right
then: the user the bot logged in as, the timeline window for the store it opened
(tasks/reconcile.snapshot_window), HTTP 200 with a JSON object. Anything else (no
session, a revoked token, a network error, a timeout, another window) is logged
and reconciliation asks as it always does; nothing is lost but the head start. The
token never reaches a log line.

Whether the homeserver answers MSC4222 `state_after` is remembered next to the session
(`STATE_AFTER_FILE`, written by `remember_state_after` after each reconciliation): with
it and an intact store the sync asks a timeline of 0 (tasks/reconcile.snapshot_window).
The file is about the server and the account, so it survives a lost database; an
answer without `state_after` turns it off again.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Final

import structlog

from contracts.matrix import MatrixUnreachable
from runtime.matrix.parse import LoadedSync, load_sync, sync_text
from runtime.matrix.session import SESSION_FILE, read_session
from runtime.matrix.sync_query import SNAPSHOT_TIMEOUT_S, SNAPSHOT_TIMEOUT_SPREAD, sync_query
from runtime.settings import Settings
from runtime.store import read_checkpoint
from tasks.reconcile import snapshot_window

__all__ = ["STATE_AFTER_FILE", "SnapshotPrefetch"]

log = structlog.get_logger(__name__)

STATE_AFTER_FILE: Final = "state_after.json"


def read_state_after(path: Path, *, homeserver: str, user_id: str) -> bool:
    """True if the file says this server answered `state_after` for this account."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("homeserver") == homeserver
        and data.get("user_id") == user_id
        and data.get("state_after") is True
    )


def write_state_after(path: Path, *, homeserver: str, user_id: str, state_after: bool) -> None:
    """Remember whether the server answered `state_after` (atomically; errors are logged)."""
    text = json.dumps({"homeserver": homeserver, "user_id": user_id, "state_after": state_after})
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.warning("snapshot.state_after_not_saved", error=type(exc).__name__)


class SnapshotPrefetch:
    """One full-state /sync in flight on a daemon thread; its answer is taken once."""

    def __init__(
        self,
        *,
        homeserver: str,
        user_id: str,
        access_token: str,
        timeline_limit: int,
        timeout: float = SNAPSHOT_TIMEOUT_S,
        state_after: bool = False,
        state_after_file: Path | None = None,
    ) -> None:
        self.user_id = user_id
        self.timeline_limit = timeline_limit
        self.homeserver = homeserver
        # Known before this start: the server answered `state_after` last time.
        self.state_after = state_after
        self._state_after_file = state_after_file
        self._timeout = timeout
        query = sync_query(
            None,
            timeout_ms=0,
            full_state=True,
            timeline_limit=timeline_limit,
            seq=secrets.randbelow(SNAPSHOT_TIMEOUT_SPREAD),
        )
        self._request = urllib.request.Request(
            homeserver.rstrip("/") + "/_matrix/client/v3/sync?" + urllib.parse.urlencode(query),
            headers={"Authorization": f"Bearer {access_token}"},
        )
        self._loaded: LoadedSync | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._fetch, name="snapshot-prefetch", daemon=True)

    @classmethod
    def start(cls, settings: Settings) -> SnapshotPrefetch | None:
        """Send the sync now, or return None when there is no token to send it with."""
        if settings.matrix_homeserver is None or settings.matrix_user_id is None:
            return None
        if settings.matrix_access_token is not None:
            token = settings.matrix_access_token.get_secret_value()
        else:
            stored = read_session(settings.matrix_store_path / SESSION_FILE)
            if stored is None or not stored.matches(
                user_id=settings.matrix_user_id, homeserver=settings.matrix_homeserver
            ):
                return None
            token = stored.access_token
        fresh = read_checkpoint(settings.matrix_db_path) is None
        state_after_file = settings.matrix_store_path / STATE_AFTER_FILE
        state_after = read_state_after(
            state_after_file, homeserver=settings.matrix_homeserver, user_id=settings.matrix_user_id
        )
        prefetch = cls(
            homeserver=settings.matrix_homeserver,
            user_id=settings.matrix_user_id,
            access_token=token,
            timeline_limit=snapshot_window(fresh=fresh, state_after=state_after),
            state_after=state_after,
            state_after_file=state_after_file,
        )
        prefetch._thread.start()
        return prefetch

    def remember_state_after(self, answered: bool) -> None:
        """After reconciliation: whether its snapshot came with `state_after`."""
        if answered == self.state_after or self._state_after_file is None:
            return
        write_state_after(
            self._state_after_file,
            homeserver=self.homeserver,
            user_id=self.user_id,
            state_after=answered,
        )
        self.state_after = answered
        log.info("snapshot.state_after", answered=answered)

    def take(self, *, user_id: str, timeline_limit: int) -> LoadedSync | None:
        """The answer if it is the sync asked for; None otherwise. Blocks; once only."""
        if self._taken:
            return None
        self._taken = True
        if self._thread.ident is not None:
            self._thread.join(self._timeout)
        if user_id != self.user_id or timeline_limit != self.timeline_limit:
            log.info(
                "snapshot.prefetch_unused",
                reason="logged in as another user" if user_id != self.user_id else "window",
            )
            return None
        loaded, self._loaded = self._loaded, None
        return loaded

    def _fetch(self) -> None:
        started = time.monotonic()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as aiohttp
        try:
            with opener.open(self._request, timeout=self._timeout) as response:
                size = int(response.headers.get("Content-Length") or 0)
                text = sync_text(response.read())
        except urllib.error.HTTPError as exc:
            log.info("snapshot.prefetch_failed", status=exc.code)
            return
        except (OSError, MatrixUnreachable) as exc:  # URLError, timeouts, not UTF-8
            log.info("snapshot.prefetch_failed", error=type(exc).__name__)
            return
        answered = time.monotonic()
        try:  # here, not when taken: the main thread is still importing
            self._loaded = load_sync(text)
        except MatrixUnreachable:
            log.info("snapshot.prefetch_failed", error="not a sync answer")
            return
        log.info(
            "snapshot.prefetched",
            timeline_limit=self.timeline_limit,
            seconds=round(answered - started, 3),
            parse_seconds=round(time.monotonic() - answered, 3),
            bytes=size or len(text),
        )
