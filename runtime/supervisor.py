"""Supervision of the runtime's long-running tasks.

One :class:`Supervisor` owns one anyio task group and every task of the
process: it starts the tasks in order, waits for each to report readiness
through ``task_status.started()``, restarts crashed tasks according to their
:class:`RestartPolicy` with exponential backoff and jitter (the bot's one
schedule, :class:`tasks.retry.Backoff`), stops everything when a task crashes
too often, and shuts down gracefully on request (a second request forces).

Graceful shutdown, in two phases: first every running task with a ``drain``
(see :class:`TaskSpec`) is asked to finish the work it holds and given up to
``grace_period`` seconds for it (the sync task lets in-flight turns finish and
takes no new events); then every task is cancelled and its cleanup scopes get
up to ``cleanup_timeout`` seconds. A second request forces: drains and cleanup
end at once. Signals (:meth:`Supervisor.handle_signal`): a second SIGTERM or
SIGINT forces only when it comes at least ``force_signal_gap`` seconds after the
first, because one stop often arrives as two signals at once (a process-group
kill through ``uv run``, systemd's control-group kill).

A one-shot task can hand a value to a later task: what it passes to
``task_status.started(value)`` goes, once, to the first run of the task whose
spec names it in ``takes_from`` (see :class:`TaskSpec`). Nothing else is shared.

Which failures are retried and which are fatal:

- a task that crashes *after* it reported ready is restarted according to its
  policy, with backoff; more than ``max_restarts`` restarts of one task within
  ``within_seconds`` are fatal;
- a task that fails *before* it reported ready at start-up, or does not report
  ready within ``start_timeout``, or a one-shot task that fails, is fatal:
  something is wrong with the configuration or the environment, and retrying
  would only hide it;
- cancellation is never a crash: it always propagates.

Errors raised by :meth:`Supervisor.run`, never wrapped in an exception group::

    SupervisorError
     ├── StartupFailed             a task failed before it was ready
     ├── RestartIntensityExceeded  a task crashed too often
     └── RequiredTaskFailed        a required task stopped for good (or hit a fatal error)
"""

from __future__ import annotations

import enum
import math
import random
import signal
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import anyio
import structlog
from anyio.abc import TaskStatus

from tasks.retry import Backoff

__all__ = [
    "RequiredTaskFailed",
    "RestartIntensityExceeded",
    "RestartPolicy",
    "StartupFailed",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorStatistics",
    "TaskSpec",
    "TaskState",
    "TaskStatistics",
    "cleanup_scope",
]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

TaskState = Literal["pending", "starting", "running", "backoff", "stopped", "failed", "done"]

# `cleanup_scope()` outside any supervisor: the same bound as SupervisorConfig's default.
_DEFAULT_CLEANUP_TIMEOUT = 5.0


class SupervisorError(Exception):
    """Base class of the errors :meth:`Supervisor.run` raises."""


class StartupFailed(SupervisorError):
    """A task failed before it reported ready, so the runtime cannot start.

    Raised when a task crashed or returned before calling
    ``task_status.started()``, did not call it within its ``start_timeout``, or
    when a one-shot task failed. ``__cause__`` is the task's own error.
    """

    def __init__(self, task_name: str, reason: str) -> None:
        super().__init__(f"task {task_name!r} failed to start: {reason}")
        self.task_name = task_name
        self.reason = reason


class RestartIntensityExceeded(SupervisorError):
    """A task was restarted more than ``max_restarts`` times within ``within_seconds``.

    ``last_error`` (also ``__cause__``) is the task's last error, ``None`` when a
    permanent task kept returning normally.
    """

    def __init__(
        self, task_name: str, count: int, window: float, last_error: Exception | None
    ) -> None:
        super().__init__(
            f"task {task_name!r} needed {count} restarts within {window:g}s; "
            f"last error: {last_error!r}"
        )
        self.task_name = task_name
        self.count = count
        self.window = window
        self.last_error = last_error
        self.__cause__ = last_error


class RequiredTaskFailed(SupervisorError):
    """A task marked ``required`` crashed and its policy does not restart it, or a
    task crashed with one of its spec's ``fatal`` errors.

    ``__cause__`` is the task's error.
    """

    def __init__(self, task_name: str, error: Exception) -> None:
        super().__init__(f"required task {task_name!r} crashed: {error!r}")
        self.task_name = task_name
        self.__cause__ = error


class RestartPolicy(enum.Enum):
    """When a task that stopped after it was ready is started again."""

    PERMANENT = "permanent"
    """Always restarted, even after a normal return."""
    TRANSIENT = "transient"
    """Restarted only after a crash (an exception)."""
    TEMPORARY = "temporary"
    """Never restarted; a crash is logged and the task is gone."""


@dataclass(frozen=True)
class TaskSpec:
    """One supervised task.

    ``func`` is called as ``await func(task_status=status)`` and must call
    ``status.started()`` once it is truly ready (a one-shot task need not). With
    ``takes_from`` it is called as ``await func(value, task_status=status)``.
    """

    name: str
    func: Callable[..., Awaitable[None]]
    policy: RestartPolicy
    one_shot: bool = False
    """Runs to completion before any later-listed task starts; its failure
    fails start-up. ``start_timeout`` then bounds the whole run."""
    start_timeout: float = 60.0
    """Seconds the task may take to call ``task_status.started()``."""
    required: bool = False
    """A crash that the policy does not restart stops the supervisor."""
    drain: Callable[[], Awaitable[None]] | None = None
    """Called on a graceful shutdown while the task runs, before anything is
    cancelled: stop taking new work and return once the work in hand is done.
    Bounded by ``grace_period``; afterwards the task is cancelled as usual."""
    fatal: tuple[type[Exception], ...] = ()
    """Errors no restart can fix (revoked credentials): a crash with one of them
    (also inside an exception group) stops the supervisor with
    :class:`RequiredTaskFailed`, whatever the policy; its ``__cause__`` is that error."""
    takes_from: str | None = None
    """The name of an earlier-listed one-shot task. Its value (what it passed to
    ``task_status.started(value)``; None if it passed nothing) is the first
    argument of this task's first run. Handed over once and not kept: restarts
    get None, so a large value is freed once the first run dropped it."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TaskSpec.name must not be empty")
        if not self.start_timeout > 0:
            raise ValueError(
                f"TaskSpec.start_timeout of {self.name!r} must be > 0, got {self.start_timeout}"
            )


@dataclass(frozen=True)
class SupervisorConfig:
    """Restart, backoff and shutdown bounds, in seconds where they are times."""

    max_restarts: int = 5
    """More restarts of one task than this within ``within_seconds`` is fatal."""
    within_seconds: float = 60.0
    """The restart-intensity window; a task healthy for longer resets its backoff."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.1
    """Fraction of the delay added or removed at random."""
    grace_period: float = 10.0
    """How long a graceful shutdown lets the tasks' drains run (in-flight work
    finishing) before cancelling; without drains, how long cleanup may run."""
    cleanup_timeout: float = 5.0
    """Default bound of :func:`cleanup_scope` for the supervised tasks, and the
    bound of all cleanup after the drain phase of a graceful shutdown."""
    force_signal_gap: float = 1.0
    """A second signal forces the shutdown only this many seconds after the first."""

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if not self.within_seconds > 0:
            raise ValueError(f"within_seconds must be > 0, got {self.within_seconds}")
        if not 0 <= self.backoff_initial <= self.backoff_max:
            raise ValueError(
                "backoff_initial and backoff_max must satisfy 0 <= backoff_initial <= "
                f"backoff_max, got {self.backoff_initial} and {self.backoff_max}"
            )
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError(f"backoff_jitter must be within [0, 1], got {self.backoff_jitter}")
        if self.grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {self.grace_period}")
        if self.cleanup_timeout < 0:
            raise ValueError(f"cleanup_timeout must be >= 0, got {self.cleanup_timeout}")
        if self.force_signal_gap < 0:
            raise ValueError(f"force_signal_gap must be >= 0, got {self.force_signal_gap}")

    @property
    def backoff(self) -> Backoff:
        """The restart schedule: doubles from ``backoff_initial``, capped at ``backoff_max``.

        The n-th restart in a row waits ``backoff.delay(n, rng)``.
        """
        return Backoff(
            initial=self.backoff_initial,
            factor=2.0,
            max=self.backoff_max,
            jitter=self.backoff_jitter,
        )


@dataclass(frozen=True)
class TaskStatistics:
    state: TaskState
    restarts: int
    last_error: str | None
    """``repr()`` of the last exception the task raised."""


@dataclass(frozen=True)
class SupervisorStatistics:
    ready: bool
    """Every task reported ready, and the supervisor is neither stopping nor stopped."""
    tasks: Mapping[str, TaskStatistics]


def _should_restart(policy: RestartPolicy, *, crashed: bool) -> bool:
    if policy is RestartPolicy.PERMANENT:
        return True
    if policy is RestartPolicy.TRANSIENT:
        return crashed
    return False


class _GracePeriod:
    """The cleanup scopes of one supervisor's tasks, cut off when shutdown says so.

    A shielded scope ignores every cancellation from outside, so the
    supervisor keeps a handle on each one to end it itself when the grace
    period is over or a shutdown is forced.
    """

    def __init__(self, cleanup_timeout: float) -> None:
        self.cleanup_timeout = cleanup_timeout
        self._deadline = math.inf
        self._forced = False
        self._scopes: weakref.WeakSet[anyio.CancelScope] = weakref.WeakSet()

    def open_scope(self, timeout: float) -> anyio.CancelScope:
        deadline = min(anyio.current_time() + timeout, self._deadline)
        scope = anyio.CancelScope(deadline=deadline, shield=True)
        if self._forced:
            scope.cancel()
        self._scopes.add(scope)
        return scope

    def end_at(self, deadline: float) -> None:
        self._deadline = min(self._deadline, deadline)
        for scope in list(self._scopes):
            scope.deadline = min(scope.deadline, deadline)

    def end_now(self) -> None:
        self._forced = True
        for scope in list(self._scopes):
            scope.cancel()


_grace_period: ContextVar[_GracePeriod | None] = ContextVar("_grace_period", default=None)


def cleanup_scope(timeout: float | None = None) -> anyio.CancelScope:
    """A shielded cancel scope for a task's cleanup, bounded by ``timeout`` seconds.

    Use it in ``finally`` blocks so cleanup can await while the task is being
    cancelled::

        finally:
            with cleanup_scope():
                await connection.aclose()

    ``timeout`` defaults to the supervisor's ``cleanup_timeout`` (5 s outside a
    supervisor). Inside a supervised task the scope also ends when the
    supervisor's grace period runs out or a shutdown is forced; a hand-made
    ``CancelScope(shield=True)`` would not.
    """
    grace = _grace_period.get()
    if grace is None:
        return anyio.move_on_after(
            _DEFAULT_CLEANUP_TIMEOUT if timeout is None else timeout, shield=True
        )
    return grace.open_scope(grace.cleanup_timeout if timeout is None else timeout)


class _Readiness:
    """The ``task_status`` a supervised task receives; keeps the value it was given."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.called = False
        self.value: object = None

    def started(self, value: object = None) -> None:
        if self.called:
            raise RuntimeError("task_status.started() called twice")
        self.called = True
        self.value = value
        self._on_ready()


@dataclass
class _TaskRecord:
    state: TaskState = "pending"
    restarts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class _Exit:
    """How one run of a task ended."""

    error: Exception | None
    ready_at: float | None
    """Clock time when the task reported ready, ``None`` if it never did."""
    value: object = None
    """What the task passed to ``task_status.started()``."""


class Supervisor:
    """Starts, watches, restarts and stops a fixed list of tasks.

    A supervisor runs once. ``request_shutdown()`` and ``statistics()`` must be
    called from the event loop thread running :meth:`run`.
    """

    def __init__(
        self,
        specs: Sequence[TaskSpec],
        config: SupervisorConfig = SupervisorConfig(),
        *,
        clock: Callable[[], float] = anyio.current_time,
        rng: random.Random | None = None,
        install_signal_handlers: bool = False,
    ) -> None:
        """``clock`` measures the restart-intensity window and healthy periods.

        ``install_signal_handlers`` makes :meth:`run` handle SIGTERM and SIGINT
        (see :meth:`handle_signals`); leave it off when embedding or testing.

        Raises ``ValueError`` when two specs share a name.
        """
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"task names must be unique, repeated: {', '.join(duplicates)}")
        for index, spec in enumerate(specs):
            producer = next((s for s in specs[:index] if s.name == spec.takes_from), None)
            if spec.takes_from is not None and (producer is None or not producer.one_shot):
                raise ValueError(
                    f"{spec.name!r} takes_from {spec.takes_from!r}, "
                    "which must be a one-shot task listed before it"
                )
        self._specs = tuple(specs)
        self._config = config
        self._backoff = config.backoff
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._install_signal_handlers = install_signal_handlers
        self._records = {spec.name: _TaskRecord() for spec in self._specs}
        self._handed_on = {spec.takes_from for spec in self._specs if spec.takes_from}
        self._handoffs: dict[str, object] = {}
        self._grace = _GracePeriod(config.cleanup_timeout)
        self._tasks_scope: anyio.CancelScope | None = None
        self._drain_requested = anyio.Event()
        self._drain_scope: anyio.CancelScope | None = None
        self._first_signal_at: float | None = None
        self._ran = False
        self._ready = False
        self._stopping = False
        self._fatal: SupervisorError | None = None
        self.shutdown_requested = False
        """A shutdown was requested; set by the first :meth:`request_shutdown`."""
        self.forced = False
        """The shutdown was forced; set by the second :meth:`request_shutdown`."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every task in order, supervise them, and return once all stopped.

        Each task starts only after the previous one reported ready (a one-shot
        task: after it finished). ``task_status.started()`` is called once all
        are ready (not at all if a shutdown comes first). Returns normally after
        a requested shutdown, or when every task finished and none is due a
        restart.

        Raises :class:`StartupFailed`, :class:`RestartIntensityExceeded` or
        :class:`RequiredTaskFailed` (after stopping the other tasks), and
        ``RuntimeError`` when called a second time. Cancellation propagates.
        """
        if self._ran:
            raise RuntimeError("a Supervisor runs only once")
        self._ran = True
        if self._stopping:
            return
        token = _grace_period.set(self._grace)
        try:
            async with anyio.create_task_group() as services:
                if self._install_signal_handlers:
                    await services.start(self.handle_signals)
                services.start_soon(self._drain_then_stop, name="supervisor:drain")
                await self._run_tasks(task_status)
                services.cancel_scope.cancel()
        finally:
            _grace_period.reset(token)
        if self._fatal is not None:
            raise self._fatal
        log.info("supervisor.stopped", forced=self.forced)

    async def _run_tasks(self, task_status: TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks_scope = tasks.cancel_scope
                if self._stopping:
                    # Requested while the signal handlers were being installed.
                    self._stop_tasks(tasks.cancel_scope)
                for spec in self._specs:
                    try:
                        await tasks.start(self._supervise, spec, name=f"supervised:{spec.name}")
                    except StartupFailed as exc:
                        self._fail(exc)
                        return
                self._ready = True
                log.info("supervisor.ready", tasks=len(self._specs))
                task_status.started()
        finally:
            self._tasks_scope = None
            self._ready = False

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown; called again, force it. Idempotent afterwards.

        Graceful: the running tasks' drains get up to ``grace_period`` seconds,
        then every task is cancelled and its :func:`cleanup_scope` may run for up
        to ``cleanup_timeout`` seconds (``grace_period`` when no task drains).
        Forced: drains and cleanup scopes end now. Safe to call before or after
        :meth:`run`.
        """
        if not self.shutdown_requested:
            self.shutdown_requested = True
            log.info("supervisor.shutdown_requested", grace_period=self._config.grace_period)
            self._begin_stop(drain=True)
        elif not self.forced:
            self.forced = True
            log.warning("supervisor.shutdown_forced")
            self._grace.end_now()
            if self._drain_scope is not None:
                self._drain_scope.cancel()

    def handle_signal(self, signum: int) -> None:
        """What a SIGTERM or SIGINT does: the first starts a graceful shutdown.

        A later one forces it only if it comes ``force_signal_gap`` seconds or
        more after the first; sooner, it is the same stop delivered twice (to
        the whole process group or control group) and is ignored.
        """
        name = signal.Signals(signum).name
        now = self._clock()
        if self._first_signal_at is None:
            self._first_signal_at = now
        elif now - self._first_signal_at < self._config.force_signal_gap:
            log.info("supervisor.signal_repeated", signal=name, forces=False)
            return
        log.info("supervisor.signal_received", signal=name)
        self.request_shutdown()

    async def handle_signals(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Call :meth:`handle_signal` on each SIGTERM or SIGINT until cancelled.

        Must run in the main thread. Reports ready once the handlers are
        installed; the previous handlers come back when it ends.
        """
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                self.handle_signal(signum)

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of readiness and of each task's state, restarts and last error."""
        return SupervisorStatistics(
            ready=self._ready and not self._stopping,
            tasks={
                name: TaskStatistics(
                    state=record.state, restarts=record.restarts, last_error=record.last_error
                )
                for name, record in self._records.items()
            },
        )

    def _begin_stop(self, *, drain: bool = False) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._tasks_scope is None:
            return
        if drain and self._draining_specs():
            self._drain_requested.set()  # _drain_then_stop cancels the tasks afterwards
        else:
            self._stop_tasks(self._tasks_scope)

    def _draining_specs(self) -> list[TaskSpec]:
        return [
            spec
            for spec in self._specs
            if spec.drain is not None and self._records[spec.name].state == "running"
        ]

    async def _drain_then_stop(self) -> None:
        """Once a graceful stop is requested: run the drains (bounded), then cancel the tasks."""
        await self._drain_requested.wait()
        specs = self._draining_specs()
        log.info("supervisor.draining", tasks=[spec.name for spec in specs])
        with anyio.move_on_after(self._config.grace_period) as scope:
            self._drain_scope = scope
            if self.forced or self._fatal is not None:
                scope.cancel()
            async with anyio.create_task_group() as drains:
                for spec in specs:
                    assert spec.drain is not None
                    drains.start_soon(_await, spec.drain, name=f"drain:{spec.name}")
        self._drain_scope = None
        log.info("supervisor.drained", cut_off=scope.cancelled_caught, forced=self.forced)
        if self._tasks_scope is not None:
            self._stop_tasks(self._tasks_scope, cleanup_for=self._config.cleanup_timeout)

    def _stop_tasks(
        self, tasks_scope: anyio.CancelScope, *, cleanup_for: float | None = None
    ) -> None:
        if cleanup_for is None:
            cleanup_for = self._config.grace_period
        self._grace.end_at(anyio.current_time() + cleanup_for)
        tasks_scope.cancel()

    def _fail(self, error: SupervisorError) -> None:
        if self._fatal is None:
            self._fatal = error
            log.error("supervisor.failed", error=str(error))
        self._begin_stop()
        if self._drain_scope is not None:
            self._drain_scope.cancel()  # a fatal error does not wait for drains

    async def _supervise(
        self, spec: TaskSpec, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run ``spec`` and restart it per policy; report ready after its first start.

        Raises :class:`StartupFailed` before it reported ready; every later
        failure goes through :meth:`_fail` instead, so no task group ever sees
        an error from a supervised task.
        """
        record = self._records[spec.name]
        restart_times: deque[float] = deque()
        consecutive_restarts = 0
        reported_ready = False

        def report_ready() -> None:
            nonlocal reported_ready
            if not reported_ready:
                reported_ready = True
                task_status.started()

        try:
            while True:
                exit_ = await self._run_once(spec, record, report_ready)
                if exit_.error is not None:
                    record.last_error = repr(exit_.error)

                if not reported_ready:
                    if spec.one_shot and exit_.error is None:
                        record.state = "done"
                        log.info("task.done", task=spec.name)
                        if spec.name in self._handed_on:
                            self._handoffs[spec.name] = exit_.value
                        report_ready()
                        return
                    record.state = "failed"
                    raise _startup_failure(spec, exit_.error)

                crashed = exit_.error is not None
                fatal = _find_error(exit_.error, spec.fatal)
                if fatal is not None and not self._stopping:
                    record.state = "failed"
                    log.error("task.failed_fatally", task=spec.name, error=repr(fatal))
                    self._fail(RequiredTaskFailed(spec.name, fatal))
                    return
                if self._stopping or not _should_restart(spec.policy, crashed=crashed):
                    record.state = "failed" if crashed else "done"
                    if crashed:
                        log.warning("task.crashed", task=spec.name, error=repr(exit_.error))
                        if spec.required and exit_.error is not None and not self._stopping:
                            self._fail(RequiredTaskFailed(spec.name, exit_.error))
                    else:
                        log.info("task.done", task=spec.name)
                    return

                now = self._clock()
                window = self._config.within_seconds
                if exit_.ready_at is not None and now - exit_.ready_at > window:
                    consecutive_restarts = 0  # it was healthy for a while: start over
                consecutive_restarts += 1
                restart_times.append(now)
                while restart_times[0] < now - window:
                    restart_times.popleft()
                if len(restart_times) > self._config.max_restarts:
                    record.state = "failed"
                    self._fail(
                        RestartIntensityExceeded(spec.name, len(restart_times), window, exit_.error)
                    )
                    return

                delay = self._backoff.delay(consecutive_restarts, self._rng)
                record.state = "backoff"
                if crashed:
                    log.warning(
                        "task.crashed",
                        task=spec.name,
                        error=repr(exit_.error),
                        restarts=record.restarts,
                        backoff=delay,
                    )
                else:
                    log.info(
                        "task.returned", task=spec.name, restarts=record.restarts, backoff=delay
                    )
                await anyio.sleep(delay)
                record.restarts += 1
                log.info("task.restarting", task=spec.name, restarts=record.restarts)
        except anyio.get_cancelled_exc_class():
            record.state = "stopped"
            raise

    def _handoff_for(self, spec: TaskSpec) -> tuple[object, ...]:
        """The arguments of a run of ``spec`` before ``task_status`` (see TaskSpec.takes_from)."""
        if spec.takes_from is None:
            return ()
        return (self._handoffs.pop(spec.takes_from, None),)

    async def _run_once(
        self, spec: TaskSpec, record: _TaskRecord, report_ready: Callable[[], None]
    ) -> _Exit:
        """Run ``spec.func`` once; return how it ended. Cancellation propagates."""
        ready_at: float | None = None
        record.state = "starting"
        with anyio.CancelScope(deadline=anyio.current_time() + spec.start_timeout) as start_scope:

            def on_ready() -> None:
                nonlocal ready_at
                if spec.one_shot:
                    # A one-shot task is ready when it is done; the timeout stays.
                    return
                start_scope.deadline = math.inf
                ready_at = self._clock()
                record.state = "running"
                log.info("task.started", task=spec.name)
                report_ready()

            status = _Readiness(on_ready)
            try:
                # No local keeps the handed-on value: the task alone decides how long it lives.
                await spec.func(*self._handoff_for(spec), task_status=status)
            except Exception as exc:
                return _Exit(error=exc, ready_at=ready_at)
        if start_scope.cancelled_caught:
            what = "finish" if spec.one_shot else "call task_status.started()"
            return _Exit(
                error=TimeoutError(f"did not {what} within {spec.start_timeout:g}s"),
                ready_at=None,
            )
        return _Exit(error=None, ready_at=ready_at, value=status.value)


def _find_error(
    error: BaseException | None, types: tuple[type[Exception], ...]
) -> Exception | None:
    """`error` if it is one of `types`, or the first such error inside an exception group."""
    if not types or error is None:
        return None
    if isinstance(error, types):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _find_error(inner, types)) is not None:
                return found
    return None


async def _await(func: Callable[[], Awaitable[None]]) -> None:
    await func()


def _startup_failure(spec: TaskSpec, error: Exception | None) -> StartupFailed:
    if error is None:
        reason = "returned without calling task_status.started()"
    elif spec.one_shot:
        reason = f"one-shot task failed: {error!r}"
    else:
        reason = repr(error)
    failure = StartupFailed(spec.name, reason)
    failure.__cause__ = error
    log.error("task.startup_failed", task=spec.name, reason=reason)
    return failure
