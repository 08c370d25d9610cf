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
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

import structlog

from runtime.matrix.session import SESSION_FILE, read_session
from runtime.matrix.sync_query import SNAPSHOT_TIMEOUT_SPREAD, sync_query
from runtime.settings import Settings
from runtime.store import read_checkpoint
from tasks.reconcile import snapshot_window

__all__ = ["SNAPSHOT_TIMEOUT_S", "SnapshotPrefetch"]

log = structlog.get_logger(__name__)

SNAPSHOT_TIMEOUT_S: Final = 120.0  # the same bound as NioMatrix's initial_sync_timeout


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
    ) -> None:
        self.user_id = user_id
        self.timeline_limit = timeline_limit
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
        self._body: Any = None
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
        prefetch = cls(
            homeserver=settings.matrix_homeserver,
            user_id=settings.matrix_user_id,
            access_token=token,
            timeline_limit=snapshot_window(fresh=fresh),
        )
        prefetch._thread.start()
        return prefetch

    def take(self, *, user_id: str, timeline_limit: int) -> Any | None:
        """The answer's JSON if it is the sync asked for; None otherwise. Blocks; once only."""
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
        body, self._body = self._body, None
        return body

    def _fetch(self) -> None:
        started = time.monotonic()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as aiohttp
        try:
            with opener.open(self._request, timeout=self._timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            log.info("snapshot.prefetch_failed", status=exc.code)
            return
        except (OSError, ValueError) as exc:  # URLError, timeouts and bad JSON among them
            log.info("snapshot.prefetch_failed", error=type(exc).__name__)
            return
        if not isinstance(body, dict) or not isinstance(body.get("next_batch"), str):
            log.info("snapshot.prefetch_failed", error="not a sync answer")
            return
        self._body = body
        log.info(
            "snapshot.prefetched",
            timeline_limit=self.timeline_limit,
            seconds=round(time.monotonic() - started, 3),
        )
