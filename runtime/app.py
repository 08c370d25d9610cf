"""The composition root: real implementations wired into the supervised tasks."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import anyio
import structlog

from contracts.matrix import (
    MatrixAuthError,
    MatrixPort,
    MatrixUnreachable,
    RoomCrypto,
    SyncBatch,
)
from contracts.platform import PlatformClient
from contracts.registry import AgentRegistry, builtin_registry, load_registry
from contracts.store import LedgerEntry
from runtime.http import HealthServer
from runtime.matrix.snapshot import SnapshotPrefetch
from runtime.metrics import PrometheusMetrics
from runtime.platforms.echo import EchoPlatform
from runtime.platforms.router import AgentRouter
from runtime.settings import Settings
from runtime.store import SqliteStore
from runtime.supervisor import RestartPolicy, Supervisor, SupervisorConfig, TaskSpec
from runtime.workspace import FsWorkspace
from tasks.attachments import AttachmentStaging
from tasks.bot import BotConfig, SurfaceBot
from tasks.catalogue import Catalogue
from tasks.encrypted import EncryptedEvents
from tasks.materializer import Materializer
from tasks.media import MediaBridge
from tasks.platform_pool import PlatformPool
from tasks.readiness import Readiness
from tasks.reconcile import reconcile, snapshot_window
from tasks.replies import Replier
from tasks.sequence import PlatformChatSequence
from tasks.sync import SyncTask
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

Backend = Literal["asyncio", "trio"]

PLATFORM_CLOSE_TIMEOUT = 5.0  # seconds for the HTTP agents' connections to close at exit


def load_agents(settings: Settings) -> AgentRegistry:
    """The configured registry, or the built-in echo agent. Raises RegistryError."""
    if settings.surface_agent_registry is None:
        return builtin_registry()
    return load_registry(settings.surface_agent_registry)


async def connect_matrix(settings: Settings, backend: Backend) -> MatrixPort:
    """Log in (or resume the session). Network errors retry with backoff; auth errors are fatal."""
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
    delay = 1.0
    while True:
        try:
            if backend == "trio":
                from runtime.matrix.trio_bridge import TrioBridgedMatrix, on_asyncio

                inner = await on_asyncio(NioMatrix.connect)(**kwargs)
                return cast(MatrixPort, TrioBridgedMatrix(inner))
            return cast(MatrixPort, await NioMatrix.connect(**kwargs))
        except MatrixUnreachable as exc:
            log.warning(
                "matrix.unreachable",
                homeserver=settings.matrix_homeserver,
                error=str(exc),
                retry_in=round(delay, 1),
            )
            await anyio.sleep(delay * (1 + random.uniform(0, 0.2)))
            delay = min(delay * 2, 60.0)


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
    """Everything one running bot holds; built by `build_runtime`."""

    settings: Settings
    store: SqliteStore
    matrix: MatrixPort
    platform: PlatformClient
    pool: PlatformPool
    registry: AgentRegistry
    bot: SurfaceBot
    readiness: Readiness
    metrics: PrometheusMetrics
    materializer: Materializer
    supervisor: Supervisor | None = None
    initial_batch: SyncBatch | None = None
    prefetch: SnapshotPrefetch | None = None
    http: HealthServer = field(init=False)
    sync: SyncTask = field(init=False)

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
            readiness=self.readiness,
            concurrency=self.settings.surface_room_concurrency,
            metrics=self.metrics,
            initial_batch=self.take_initial_batch,
        )

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

    async def reconcile_task(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        snapshot = await self._prefetched_snapshot()
        _report, batch = await reconcile(self.store, self.matrix, snapshot=snapshot)
        if self.store.checkpoint() is None:
            self.initial_batch = batch  # the sync task catches up from it
        self.readiness.reconciled = True
        task_status.started()

    async def _prefetched_snapshot(self) -> SyncBatch | None:
        """The answer of the sync sent before the imports, if it fits (runtime/matrix/snapshot.py).

        Taken once: a reconciliation restarted by the supervisor asks afresh.
        """
        prefetch, self.prefetch = self.prefetch, None
        if prefetch is None:
            return None
        window = snapshot_window(fresh=self.store.checkpoint() is None)
        user_id = self.matrix.user_id
        body = await anyio.to_thread.run_sync(
            lambda: prefetch.take(user_id=user_id, timeline_limit=window),
            abandon_on_cancel=True,
        )
        if body is None:
            return None
        # Through the adapter: the snapshot's to-device messages and key counts must reach
        # the crypto store before any checkpoint moves past them.
        batch_from_sync = getattr(self.matrix, "batch_from_sync", None)
        if batch_from_sync is not None:
            return cast(SyncBatch, await batch_from_sync(body))
        from runtime.matrix.parse import sync_batch_from_json  # loaded by connect_matrix already

        return sync_batch_from_json(body, user_id)

    def take_initial_batch(self) -> SyncBatch | None:
        batch, self.initial_batch = self.initial_batch, None
        return batch

    def specs(self) -> list[TaskSpec]:
        return [
            TaskSpec("http", self.http.run, RestartPolicy.PERMANENT),
            TaskSpec(
                "reconcile",
                self.reconcile_task,
                RestartPolicy.TRANSIENT,
                one_shot=True,
                start_timeout=600,
            ),
            TaskSpec("platform_pool", self.pool.run, RestartPolicy.PERMANENT),
            TaskSpec("materializer", self.materializer.run, RestartPolicy.PERMANENT),
            TaskSpec("sync", self.sync.run, RestartPolicy.PERMANENT, start_timeout=600),
        ]

    def is_ready(self) -> bool:
        ready = self.readiness.ready
        self.metrics.set_ready(ready)
        return ready

    def render_metrics(self) -> bytes:
        if self.supervisor is not None:
            stats = self.supervisor.statistics()
            self.metrics.set_restarts({name: t.restarts for name, t in stats.tasks.items()})
        self.metrics.set_ready(self.readiness.ready)
        return self.metrics.render()


@asynccontextmanager
async def build_runtime(
    settings: Settings,
    *,
    backend: Backend = "asyncio",
    registry: AgentRegistry | None = None,
    echo: EchoPlatform | None = None,
    prefetch: SnapshotPrefetch | None = None,
) -> AsyncIterator[Runtime]:
    """Open the store, log in, and wire the tasks. Closes what it opened on exit."""
    registry = registry or load_agents(settings)
    store = SqliteStore(settings.matrix_db_path)
    try:
        matrix = await connect_matrix(settings, backend)
        try:
            metrics = PrometheusMetrics()
            readiness = Readiness()
            router = AgentRouter(
                registry, echo=echo or EchoPlatform(workspace=settings.surface_workspace_dir)
            )
            pool = PlatformPool(router)
            metrics.gauge_source(
                "surface_platform_pool",
                "Platform connection pool statistics",
                lambda: {k: float(v) for k, v in vars(pool.statistics()).items()},
            )
            catalogue = Catalogue(settings.surface_locale)
            sequence = PlatformChatSequence(store, matrix)
            materializer = Materializer(
                matrix,
                FsWorkspace(settings.surface_workspace_dir),
                max_upload_bytes=settings.surface_max_upload_bytes,
                uploads=store,
            )
            media = MediaBridge(
                materializer.send_job, AttachmentStaging(), Replier(matrix), catalogue
            )
            bot = SurfaceBot(
                store=store,
                matrix=matrix,
                platform=pool,
                registry=registry,
                sequence=sequence,
                catalogue=catalogue,
                config=BotConfig(
                    is_allowed=settings.is_allowed, encrypt_rooms=settings.surface_encrypt_rooms
                ),
                on_media=media.on_media,
                take_attachments=media.take_attachments,
                streamer=TurnStreamer(
                    matrix,
                    pool,
                    catalogue,
                    edit_interval=settings.surface_stream_edit_interval,
                    on_file=media.on_file,
                    metrics=metrics,
                ),
            )
            runtime = Runtime(
                settings=settings,
                store=store,
                matrix=matrix,
                platform=router,
                pool=pool,
                registry=registry,
                bot=bot,
                readiness=readiness,
                metrics=metrics,
                materializer=materializer,
                prefetch=prefetch,
            )
            try:
                with materializer:
                    yield runtime
            finally:
                await close_platforms(router)
        finally:
            await close_matrix(matrix)
    finally:
        store.close()


async def run_bot(
    settings: Settings,
    *,
    backend: Backend = "asyncio",
    install_signal_handlers: bool = True,
    registry: AgentRegistry | None = None,
    prefetch: SnapshotPrefetch | None = None,
) -> None:
    """Run the bot until a shutdown signal. Raises SupervisorError on fatal task failure."""
    async with build_runtime(
        settings, backend=backend, registry=registry, prefetch=prefetch
    ) as runtime:
        supervisor = Supervisor(
            runtime.specs(), SupervisorConfig(), install_signal_handlers=install_signal_handlers
        )
        runtime.supervisor = supervisor
        log.info(
            "bot.starting",
            user_id=runtime.matrix.user_id,
            backend=backend,
            agents=[a.id for a in runtime.registry],
        )
        await supervisor.run()
        log.info("bot.stopped")


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
