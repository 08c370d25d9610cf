"""The composition root: the real implementations wired into the supervised tasks.

Read it top to bottom:

- `build_runtime` opens what the bot holds on one AsyncExitStack (SQLite store,
  Matrix session, agent connections), so whatever fails,
  everything opened so far closes, in reverse order; then it wires the parts into a
  `Runtime`.
- `Runtime` lists the supervised tasks in start order and owns their supervisor::

      http -> reconcile (one-shot) -> platform_pool -> materializer -> ledger_pruner
           -> room_signals -> sync -> cross_signing (the check start-up skipped, if it did)

  Reconciliation hands the sync task the batch to catch up from with
  ``task_status.started(batch)`` (``TaskSpec.takes_from``, runtime/reconciliation.py);
  the sync task reports started only once caught up, so ``/ready`` is the
  supervisor's own readiness (every task started, not shutting down).
- `run_bot` / `run` run that supervisor on asyncio or trio.

Task bodies live with their tasks (tasks/, runtime/reconciliation.py); nothing here
changes after it is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, cast

import anyio
import structlog
from anyio.abc import TaskStatus

from contracts.matrix import (
    MatrixAuthError,
    MatrixError,
    MatrixPort,
    MatrixRateLimited,
    MatrixUnreachable,
    RoomCrypto,
    SyncBatch,
)
from contracts.registry import AgentRegistry, builtin_registry, load_registry
from contracts.store import LedgerEntry, StoreBusy
from runtime.http import HealthServer
from runtime.legacy_db import MigrationResult, migrate_legacy_database
from runtime.matrix.snapshot import SnapshotPrefetch
from runtime.metrics import PrometheusMetrics
from runtime.platforms.echo import EchoPlatform
from runtime.platforms.router import AgentRouter
from runtime.reconciliation import Reconciliation
from runtime.settings import Settings
from runtime.store import SqliteStore
from runtime.supervisor import (
    RequiredTaskFailed,
    RestartPolicy,
    Supervisor,
    SupervisorConfig,
    TaskSpec,
)
from runtime.workspace import FsWorkspace
from tasks.attachments import AttachmentStaging
from tasks.bot import BotConfig, SurfaceBot
from tasks.catalogue import Catalogue
from tasks.encrypted import EncryptedEvents
from tasks.materializer import Materializer
from tasks.media import MediaBridge
from tasks.platform_pool import PlatformPool
from tasks.replies import Replier
from tasks.retention import LedgerPruner
from tasks.retry import Backoff, retry
from tasks.room_signals import RoomSignals
from tasks.sequence import PlatformChatSequence
from tasks.sync import STORE_BACKOFF, SYNC_COALESCE_S, SyncTask
from tasks.turn_limits import BoundedTurns
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

Backend = Literal["asyncio", "trio"]

PLATFORM_CLOSE_TIMEOUT = 5.0  # seconds for the HTTP agents' connections to close at exit
CROSS_SIGNING_CONFIRM_DELAY = 5.0  # seconds after ready (Runtime.confirm_cross_signing)
CONNECT_BACKOFF = Backoff(initial=1.0, factor=2.0, max=60.0, jitter=0.1)


def load_agents(settings: Settings) -> AgentRegistry:
    """The configured registry, or the built-in echo agent. Raises RegistryError."""
    if settings.surface_agent_registry is None:
        return builtin_registry()
    return load_registry(settings.surface_agent_registry)


async def connect_matrix(settings: Settings, backend: Backend) -> MatrixPort:
    """Log in (or resume the session); this is the one place that retries it.

    An unreachable homeserver is retried with backoff until it answers (the
    bot cannot do anything without it); auth errors are fatal.
    """
    from runtime.matrix.nio_adapter import NioMatrix

    assert settings.matrix_homeserver is not None
    assert settings.matrix_user_id is not None
    kwargs: dict[str, Any] = {
        "homeserver": settings.matrix_homeserver,
        "user_id": settings.matrix_user_id,
        "password": settings.matrix_password.get_secret_value()
        if settings.matrix_password
        else None,
        "access_token": settings.matrix_access_token.get_secret_value()
        if settings.matrix_access_token
        else None,
        "store_path": settings.matrix_store_path,
        "device_name": settings.matrix_device_name,
        "store_passphrase": settings.matrix_store_passphrase.get_secret_value()
        if settings.matrix_store_passphrase
        else None,
    }

    async def connect() -> MatrixPort:
        if backend == "trio":
            from runtime.matrix.trio_bridge import TrioBridgedMatrix, on_asyncio

            inner = await on_asyncio(NioMatrix.connect)(**kwargs)
            return cast(MatrixPort, TrioBridgedMatrix(inner))
        return cast(MatrixPort, await NioMatrix.connect(**kwargs))

    return await retry(
        connect,
        CONNECT_BACKOFF,
        retry_on=MatrixUnreachable,
        operation="matrix.connect",
        log_fields={"homeserver": settings.matrix_homeserver},
    )


async def close_matrix(matrix: MatrixPort) -> None:
    close = getattr(matrix, "close", None)
    if close is not None:
        with anyio.move_on_after(5, shield=True):
            await close()


async def close_platforms(router: AgentRouter) -> None:
    """Close the HTTP agents' connections; shielded and bounded, as shutdown cleanup must be."""
    with anyio.move_on_after(PLATFORM_CLOSE_TIMEOUT, shield=True):
        await router.aclose()


@dataclass
class Runtime:
    """One wired bot and the supervisor of its tasks; built and closed by `build_runtime`."""

    settings: Settings
    store: SqliteStore
    matrix: MatrixPort
    registry: AgentRegistry
    pool: PlatformPool
    materializer: Materializer
    bot: SurfaceBot
    metrics: PrometheusMetrics
    signals: RoomSignals
    prefetch: SnapshotPrefetch | None = None
    install_signal_handlers: bool = False
    migration: MigrationResult | None = None
    http: HealthServer = field(init=False)
    sync: SyncTask = field(init=False)
    pruner: LedgerPruner = field(init=False)
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        host, port = self.settings.http_host_port
        self.http = HealthServer(host, port, ready=self.is_ready, metrics=self.render_metrics)
        encrypted = EncryptedEvents(
            self.bot.handle,
            cast(RoomCrypto, self.matrix),
            bot_user_id=self.matrix.user_id,
            notify=self.say_undecryptable,
            grace=self.settings.surface_decrypt_grace,
        )
        self.sync = SyncTask(
            store=self.store,
            matrix=self.matrix,
            handler=encrypted.handle,
            concurrency=self.settings.surface_room_concurrency,
            metrics=self.metrics,
            on_synced=self.signals.synced,
            coalesce=SYNC_COALESCE_S,
        )
        self.pruner = LedgerPruner(
            self.store, retention_days=self.settings.surface_ledger_retention_days
        )
        reconciliation = Reconciliation(
            self.store,
            self.matrix,
            self.prefetch,
            default_agent_id=self.registry.default.id,
            migration=self.migration,
        )
        self.supervisor = Supervisor(
            [
                TaskSpec("http", self.http.run, RestartPolicy.PERMANENT),
                TaskSpec(
                    "reconcile",
                    partial(reconcile_when_unlocked, reconciliation),
                    RestartPolicy.TRANSIENT,
                    one_shot=True,
                    start_timeout=600,
                ),
                TaskSpec("platform_pool", self.pool.run, RestartPolicy.PERMANENT),
                TaskSpec("materializer", self.materializer.run, RestartPolicy.PERMANENT),
                TaskSpec("ledger_pruner", self.pruner.run, RestartPolicy.PERMANENT),
                TaskSpec("room_signals", self.signals.run, RestartPolicy.PERMANENT),
                TaskSpec(
                    "sync",
                    self.sync.run,
                    RestartPolicy.PERMANENT,
                    start_timeout=600,
                    takes_from="reconcile",
                    drain=self.sync.drain,
                    # The homeserver no longer takes the token: run_bot logs in again.
                    fatal=(MatrixAuthError,),
                ),
                TaskSpec("cross_signing", self.confirm_cross_signing, RestartPolicy.TEMPORARY),
            ],
            SupervisorConfig(grace_period=self.settings.surface_shutdown_grace),
            install_signal_handlers=self.install_signal_handlers,
        )

    async def confirm_cross_signing(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Once ready: the cross-signing check that start-up skipped on the store's record
        (runtime/matrix/nio_adapter.py), retried while the homeserver is unreachable."""
        task_status.started()
        confirm = getattr(self.matrix, "confirm_cross_signing", None)
        if confirm is None:
            return
        # Not beside the first answers (a restart's catch-up): one request, a little later.
        await anyio.sleep(CROSS_SIGNING_CONFIRM_DELAY)
        try:
            await retry(
                confirm,
                CONNECT_BACKOFF,
                retry_on=(MatrixUnreachable, MatrixRateLimited),
                operation="cross_signing.confirm",
            )
        except MatrixError as exc:
            log.warning("cross_signing.confirm_failed", error=str(exc))

    async def say_undecryptable(self, entry: LedgerEntry) -> None:
        """The one notice for a message that stayed unreadable (tasks/encrypted.py)."""
        if not self.settings.is_allowed(entry.sender):
            return
        await Replier(self.matrix).say(
            entry.room_id,
            Catalogue(self.settings.surface_locale)("undecryptable"),
            reply_to=entry.event_id,
            purpose="undecryptable",
        )

    def is_ready(self) -> bool:
        """``/ready``: every task started (the sync task once caught up), not stopping."""
        ready = self.supervisor.statistics().ready
        self.metrics.set_ready(ready)
        return ready

    def render_metrics(self) -> bytes:
        stats = self.supervisor.statistics()
        self.metrics.set_restarts({name: t.restarts for name, t in stats.tasks.items()})
        self.metrics.set_ready(stats.ready)
        return self.metrics.render()


@asynccontextmanager
async def build_runtime(
    settings: Settings,
    *,
    backend: Backend = "asyncio",
    registry: AgentRegistry | None = None,
    echo: EchoPlatform | None = None,
    prefetch: SnapshotPrefetch | None = None,
    install_signal_handlers: bool = False,
) -> AsyncIterator[Runtime]:
    """Open the store, log in, and wire the tasks. Closes what it opened on exit."""
    registry = registry or load_agents(settings)
    async with AsyncExitStack() as opened:
        # The old surface's key-value layout, if that is what the file holds (upgrade path).
        migration = migrate_legacy_database(settings.matrix_db_path)
        store = opened.enter_context(SqliteStore(settings.matrix_db_path))
        matrix = await connect_matrix(settings, backend)
        opened.push_async_callback(close_matrix, matrix)
        metrics = PrometheusMetrics()
        router = AgentRouter(
            registry, echo=echo or EchoPlatform(workspace=settings.surface_workspace_dir)
        )
        opened.push_async_callback(close_platforms, router)
        pool = PlatformPool(router)
        metrics.gauge_source(
            "surface_platform_pool",
            "Platform connection pool statistics",
            lambda: {k: float(v) for k, v in vars(pool.statistics()).items()},
        )
        catalogue = Catalogue(settings.surface_locale)
        sequence = PlatformChatSequence(store, matrix)
        staging = AttachmentStaging()
        materializer = Materializer(
            matrix,
            FsWorkspace(settings.surface_workspace_dir),
            max_upload_bytes=settings.surface_max_upload_bytes,
            uploads=store,
            staging=staging,
        )
        media = MediaBridge(materializer, staging, Replier(matrix), catalogue)
        signals = RoomSignals(matrix)  # typing and receipts, off the answers' path
        bot = SurfaceBot(
            store=store,
            matrix=matrix,
            platform=pool,
            registry=registry,
            sequence=sequence,
            catalogue=catalogue,
            config=BotConfig(
                is_allowed=settings.is_allowed,
                max_chats_per_user=settings.surface_max_chats_per_user,
                encrypt_rooms=settings.surface_encrypt_rooms,
                edit_window=settings.surface_edit_window,
            ),
            on_media=media.on_media,
            take_attachments=media.take_attachments,
            streamer=TurnStreamer(
                matrix,
                BoundedTurns(
                    pool,
                    max_seconds=settings.surface_turn_timeout,
                    max_chars=settings.surface_turn_max_chars,
                ),
                catalogue,
                edit_interval=settings.surface_stream_edit_interval,
                first_message_chars=settings.surface_stream_first_chars,
                first_message_wait=settings.surface_stream_first_wait,
                max_edits=settings.surface_stream_max_edits,
                on_file=media.on_file,
                metrics=metrics,
                sent=store,
                signals=signals,
            ),
            signals=signals,
        )
        yield Runtime(
            settings=settings,
            store=store,
            matrix=matrix,
            registry=registry,
            pool=pool,
            materializer=materializer,
            bot=bot,
            metrics=metrics,
            signals=signals,
            prefetch=prefetch,
            install_signal_handlers=install_signal_handlers,
            migration=migration,
        )


async def run_bot(
    settings: Settings,
    *,
    backend: Backend = "asyncio",
    install_signal_handlers: bool = True,
    registry: AgentRegistry | None = None,
    prefetch: SnapshotPrefetch | None = None,
) -> None:
    """Run the bot until a shutdown signal. Raises SupervisorError on fatal task failure.

    When the homeserver stops accepting the session's token while running (revoked,
    expired: M_UNKNOWN_TOKEN from /sync), the whole runtime is built again, which logs
    in with MATRIX_PASSWORD (runtime/matrix/nio_adapter.py: a stored token that is
    refused falls back to the password, same device; a device whose keys the logout
    deleted publishes them again and is cross-signed again, so encrypted rooms keep
    working). Without a password, or with a configured MATRIX_ACCESS_TOKEN (it always
    wins), raises MatrixAuthError naming the fix.
    """
    while True:
        try:
            async with build_runtime(
                settings,
                backend=backend,
                registry=registry,
                prefetch=prefetch,
                install_signal_handlers=install_signal_handlers,
            ) as runtime:
                log.info(
                    "bot.starting",
                    user_id=runtime.matrix.user_id,
                    backend=backend,
                    agents=[a.id for a in runtime.registry],
                )
                await runtime.supervisor.run()
                log.info("bot.stopped")
                return
        except RequiredTaskFailed as exc:
            lost = exc.__cause__
            if not isinstance(lost, MatrixAuthError):
                raise
            if not can_log_in_again(settings):
                raise MatrixAuthError(
                    f"the homeserver no longer accepts the bot's access token ({lost}); set "
                    "MATRIX_PASSWORD so the bot can log in again, or a new "
                    "MATRIX_ACCESS_TOKEN",
                    errcode=lost.errcode,
                    status=lost.status,
                ) from exc
            log.warning("matrix.session_lost", error=str(lost), action="log_in_again")
            prefetch = None  # answered for the old session; the new one syncs itself


async def reconcile_when_unlocked(
    reconciliation: Reconciliation,
    *,
    task_status: TaskStatus[SyncBatch | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Reconciliation, tried again while another process holds the database's write lock.

    Idempotent, and StoreBusy comes before it reports anything, so a rerun is safe.
    """
    await retry(
        partial(reconciliation.run, task_status=task_status),
        STORE_BACKOFF,
        retry_on=StoreBusy,
        operation="reconcile",
    )


def can_log_in_again(settings: Settings) -> bool:
    """A refused session can be replaced: a password is set and no fixed token overrides it."""
    return settings.matrix_password is not None and settings.matrix_access_token is None


def run(
    settings: Settings,
    *,
    backend: Backend = "asyncio",
    prefetch: SnapshotPrefetch | None = None,
) -> None:
    """Blocking entry point: runs the bot on the chosen event loop backend."""
    if backend == "trio":
        import trio_asyncio

        async def main_trio() -> None:
            async with trio_asyncio.open_loop():
                await run_bot(settings, backend="trio", prefetch=prefetch)

        anyio.run(main_trio, backend="trio")
    else:
        anyio.run(
            lambda: run_bot(settings, backend="asyncio", prefetch=prefetch), backend="asyncio"
        )


__all__ = ["MatrixAuthError", "Runtime", "build_runtime", "load_agents", "run", "run_bot"]
