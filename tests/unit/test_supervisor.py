from __future__ import annotations

import gc
import itertools
import os
import random
import signal
import weakref
from collections.abc import Mapping, Sequence

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

import runtime.supervisor
from runtime.supervisor import (
    RequiredTaskFailed,
    RestartIntensityExceeded,
    RestartPolicy,
    StartupFailed,
    Supervisor,
    SupervisorConfig,
    TaskSpec,
    cleanup_scope,
)

# How long a test waits for a condition before it fails (virtual under MockClock).
DEADLINE = 10.0
# Longer than any deadline here, short enough that a regression fails instead of hanging.
LONG_CLEANUP = 60.0
FAST = SupervisorConfig(backoff_initial=0.001, backoff_max=0.01, backoff_jitter=0.0)


class Boom(Exception):
    pass


async def serve_forever(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await anyio.sleep_forever()


class FlakyTask:
    """Crashes on its first ``crashes`` runs, then serves until cancelled.

    A crash comes after ``task_status.started()`` unless ``crash_before_ready``.
    """

    def __init__(self, crashes: int, *, crash_before_ready: bool = False) -> None:
        self.crashes = crashes
        self.crash_before_ready = crash_before_ready
        self.runs = 0
        self.run_started_at: list[float] = []
        self.serving = anyio.Event()

    async def __call__(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        self.run_started_at.append(anyio.current_time())
        if self.runs <= self.crashes:
            if not self.crash_before_ready:
                task_status.started()
            raise Boom(f"crash {self.runs}")
        task_status.started()
        self.serving.set()
        await anyio.sleep_forever()


class ReturningTask:
    """Reports ready and returns at once, every time it runs."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logged_backoffs(logs: Sequence[Mapping[str, object]]) -> list[object]:
    return [entry["backoff"] for entry in logs if entry["event"] == "task.crashed"]


# --- start-up ---------------------------------------------------------------


async def test_run_reports_ready_once_every_task_is_ready() -> None:
    supervisor = Supervisor(
        [
            TaskSpec("a", serve_forever, RestartPolicy.PERMANENT),
            TaskSpec("b", serve_forever, RestartPolicy.PERMANENT),
        ]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)

        stats = supervisor.statistics()
        supervisor.request_shutdown()

    assert stats.ready
    assert {name: task.state for name, task in stats.tasks.items()} == {
        "a": "running",
        "b": "running",
    }


async def test_task_starts_only_after_previous_task_is_ready() -> None:
    events: list[str] = []

    async def slow_to_ready(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        events.append("a.begin")
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        events.append("a.ready")
        task_status.started()
        await anyio.sleep_forever()

    async def second(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        events.append("b.begin")
        task_status.started()
        await anyio.sleep_forever()

    supervisor = Supervisor(
        [
            TaskSpec("a", slow_to_ready, RestartPolicy.PERMANENT),
            TaskSpec("b", second, RestartPolicy.PERMANENT),
        ]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        supervisor.request_shutdown()

    assert events == ["a.begin", "a.ready", "b.begin"]


async def test_crash_before_started_is_startup_failure_not_restart() -> None:
    task = FlakyTask(crashes=1, crash_before_ready=True)
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], FAST)

    with anyio.fail_after(DEADLINE), pytest.raises(StartupFailed, match="'sync'") as caught:
        await supervisor.run()

    assert task.runs == 1
    assert isinstance(caught.value.__cause__, Boom)
    assert supervisor.statistics().tasks["sync"].state == "failed"


async def test_startup_failure_stops_tasks_already_running() -> None:
    stopped = False
    second = FlakyTask(crashes=1, crash_before_ready=True)

    async def first(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal stopped
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            stopped = True

    supervisor = Supervisor(
        [
            TaskSpec("first", first, RestartPolicy.PERMANENT),
            TaskSpec("second", second, RestartPolicy.PERMANENT),
        ]
    )

    with anyio.fail_after(DEADLINE), pytest.raises(StartupFailed, match="'second'"):
        await supervisor.run()

    assert stopped


async def test_task_returning_before_started_is_startup_failure() -> None:
    async def returns_early(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        return

    supervisor = Supervisor([TaskSpec("http", returns_early, RestartPolicy.PERMANENT)])

    with anyio.fail_after(DEADLINE), pytest.raises(StartupFailed, match="without calling"):
        await supervisor.run()


@pytest.mark.virtual_time
async def test_task_that_never_signals_ready_times_out(time_is_virtual: bool) -> None:
    async def never_ready(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.sleep_forever()

    timeout = 60.0 if time_is_virtual else 0.05
    supervisor = Supervisor(
        [TaskSpec("sync", never_ready, RestartPolicy.PERMANENT, start_timeout=timeout)]
    )

    with anyio.fail_after(DEADLINE + timeout), pytest.raises(StartupFailed) as caught:
        await supervisor.run()

    assert caught.value.task_name == "sync"
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_one_shot_runs_to_completion_before_permanent_starts() -> None:
    events: list[str] = []

    async def reconcile(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        events.append("reconcile.begin")
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        events.append("reconcile.end")

    async def sync(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        events.append("sync.begin")
        task_status.started()
        await anyio.sleep_forever()

    supervisor = Supervisor(
        [
            TaskSpec("reconcile", reconcile, RestartPolicy.TEMPORARY, one_shot=True),
            TaskSpec("sync", sync, RestartPolicy.PERMANENT),
        ]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        state = supervisor.statistics().tasks["reconcile"].state
        supervisor.request_shutdown()

    assert events == ["reconcile.begin", "reconcile.end", "sync.begin"]
    assert state == "done"


async def test_one_shot_failure_fails_startup() -> None:
    sync = FlakyTask(crashes=0)

    async def reconcile(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        raise Boom("homeserver unreachable")

    supervisor = Supervisor(
        [
            TaskSpec("reconcile", reconcile, RestartPolicy.TEMPORARY, one_shot=True),
            TaskSpec("sync", sync, RestartPolicy.PERMANENT),
        ]
    )

    with anyio.fail_after(DEADLINE), pytest.raises(StartupFailed, match="'reconcile'") as caught:
        await supervisor.run()

    assert isinstance(caught.value.__cause__, Boom)
    assert sync.runs == 0


# --- a one-shot task's value handed on ---------------------------------------


class Batch:
    """A value a one-shot task hands on (weak-referenceable, to see it freed)."""


class TakesBatch:
    """Records what each run received; crashes after ready on its first run."""

    def __init__(self) -> None:
        self.received: list[object] = []
        self.serving = anyio.Event()

    async def __call__(
        self, value: object, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.received.append(value if value is None else type(value).__name__)
        del value  # the supervisor keeps no reference: this run decides
        task_status.started()
        if len(self.received) == 1:
            raise Boom("crash after ready")
        self.serving.set()
        await anyio.sleep_forever()


async def test_a_one_shot_tasks_started_value_goes_once_to_the_task_taking_it() -> None:
    batch = Batch()
    freed = weakref.ref(batch)
    consumer = TakesBatch()

    async def reconcile(*, task_status: TaskStatus[Batch] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal batch
        task_status.started(batch)
        del batch

    supervisor = Supervisor(
        [
            TaskSpec("reconcile", reconcile, RestartPolicy.TRANSIENT, one_shot=True),
            TaskSpec("other", serve_forever, RestartPolicy.PERMANENT),
            TaskSpec("sync", consumer, RestartPolicy.PERMANENT, takes_from="reconcile"),
        ],
        FAST,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await consumer.serving.wait()
        supervisor.request_shutdown()

    # The first run got the value; the restart after its crash got None.
    assert consumer.received == ["Batch", None]
    gc.collect()
    assert freed() is None


async def test_a_one_shot_task_that_passes_nothing_hands_on_none() -> None:
    received: list[object] = []

    async def reconcile(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        return

    async def sync(value: object, *, task_status: TaskStatus[None]) -> None:
        received.append(value)
        task_status.started()
        await anyio.sleep_forever()

    supervisor = Supervisor(
        [
            TaskSpec("reconcile", reconcile, RestartPolicy.TRANSIENT, one_shot=True),
            TaskSpec("sync", sync, RestartPolicy.PERMANENT, takes_from="reconcile"),
        ]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        supervisor.request_shutdown()

    assert received == [None]


@pytest.mark.parametrize(
    "specs",
    [
        [
            TaskSpec("sync", serve_forever, RestartPolicy.PERMANENT, takes_from="reconcile"),
            TaskSpec("reconcile", serve_forever, RestartPolicy.TRANSIENT, one_shot=True),
        ],
        [
            TaskSpec("http", serve_forever, RestartPolicy.PERMANENT),
            TaskSpec("sync", serve_forever, RestartPolicy.PERMANENT, takes_from="http"),
        ],
        [TaskSpec("sync", serve_forever, RestartPolicy.PERMANENT, takes_from="nobody")],
    ],
    ids=["listed-later", "not-one-shot", "unknown"],
)
def test_takes_from_must_name_an_earlier_one_shot_task(specs: list[TaskSpec]) -> None:
    with pytest.raises(ValueError, match="must be a one-shot task listed before it"):
        Supervisor(specs)


# --- restart policies -------------------------------------------------------


async def test_permanent_task_restarted_after_crash() -> None:
    task = FlakyTask(crashes=1)
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], FAST)

    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await task.serving.wait()
        supervisor.request_shutdown()

    assert task.runs == 2


async def test_permanent_task_restarted_after_normal_return() -> None:
    runs = 0
    serving = anyio.Event()

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 1:
            return
        serving.set()
        await anyio.sleep_forever()

    supervisor = Supervisor([TaskSpec("pool", task, RestartPolicy.PERMANENT)], FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await serving.wait()
        supervisor.request_shutdown()

    assert runs == 2


async def test_transient_task_restarted_after_crash() -> None:
    task = FlakyTask(crashes=1)
    supervisor = Supervisor([TaskSpec("pool", task, RestartPolicy.TRANSIENT)], FAST)

    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await task.serving.wait()
        supervisor.request_shutdown()

    assert task.runs == 2


async def test_transient_task_not_restarted_after_normal_return() -> None:
    task = ReturningTask()
    supervisor = Supervisor([TaskSpec("pool", task, RestartPolicy.TRANSIENT)], FAST)

    with anyio.fail_after(DEADLINE):
        await supervisor.run()

    assert task.runs == 1
    assert supervisor.statistics().tasks["pool"].state == "done"


async def test_temporary_task_not_restarted() -> None:
    task = FlakyTask(crashes=1)
    supervisor = Supervisor([TaskSpec("probe", task, RestartPolicy.TEMPORARY)], FAST)

    with anyio.fail_after(DEADLINE):
        await supervisor.run()

    assert task.runs == 1
    assert supervisor.statistics().tasks["probe"].state == "failed"


async def test_required_temporary_task_crash_stops_supervisor() -> None:
    task = FlakyTask(crashes=1)
    supervisor = Supervisor(
        [
            TaskSpec("http", task, RestartPolicy.TEMPORARY, required=True),
            TaskSpec("sync", serve_forever, RestartPolicy.PERMANENT),
        ],
        FAST,
    )

    with anyio.fail_after(DEADLINE), pytest.raises(RequiredTaskFailed, match="'http'") as caught:
        await supervisor.run()

    assert isinstance(caught.value.__cause__, Boom)
    assert supervisor.statistics().tasks["sync"].state == "stopped"


async def test_crash_before_started_during_restart_counts_as_crash() -> None:
    calls = 0
    serving = anyio.Event()

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Boom("crash before ready on restart")
        task_status.started()
        if calls == 1:
            raise Boom("crash after ready")
        serving.set()
        await anyio.sleep_forever()

    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await serving.wait()
        restarts = supervisor.statistics().tasks["sync"].restarts
        supervisor.request_shutdown()

    assert restarts == 2


async def test_restart_intensity_exceeded_stops_runtime_with_reason() -> None:
    crashing = FlakyTask(crashes=1_000)
    config = SupervisorConfig(max_restarts=3, within_seconds=60, backoff_initial=0.001)
    supervisor = Supervisor(
        [
            TaskSpec("sync", crashing, RestartPolicy.PERMANENT),
            TaskSpec("http", serve_forever, RestartPolicy.PERMANENT),
        ],
        config,
    )

    with anyio.fail_after(DEADLINE), pytest.raises(RestartIntensityExceeded) as caught:
        await supervisor.run()

    error = caught.value
    assert (error.task_name, error.count, error.window) == ("sync", 4, 60)
    assert isinstance(error.last_error, Boom)
    assert error.__cause__ is error.last_error
    assert supervisor.statistics().tasks["http"].state == "stopped"


async def test_crashes_outside_the_window_do_not_exceed_intensity() -> None:
    clock = ManualClock()
    calls = 0
    serving = anyio.Event()

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal calls
        calls += 1
        task_status.started()
        if calls <= 4:
            clock.now += 31  # at most two crashes within any 60 s window
            raise Boom("crash")
        serving.set()
        await anyio.sleep_forever()

    config = SupervisorConfig(
        max_restarts=2, within_seconds=60, backoff_initial=0.001, backoff_jitter=0.0
    )
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], config, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await serving.wait()
        supervisor.request_shutdown()

    assert calls == 5


# --- backoff ----------------------------------------------------------------


@pytest.mark.virtual_time
async def test_backoff_grows_exponentially_and_is_capped(time_is_virtual: bool) -> None:
    base = 0.5 if time_is_virtual else 0.001
    config = SupervisorConfig(
        max_restarts=100, backoff_initial=base, backoff_max=4 * base, backoff_jitter=0.0
    )
    expected = [base, 2 * base, 4 * base, 4 * base, 4 * base]
    task = FlakyTask(crashes=len(expected))
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], config)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            with anyio.fail_after(DEADLINE + sum(expected)):
                await task.serving.wait()
            supervisor.request_shutdown()

    assert logged_backoffs(logs) == pytest.approx(expected)
    if time_is_virtual:
        starts = task.run_started_at
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert gaps == pytest.approx(expected)


async def test_backoff_resets_after_healthy_period() -> None:
    clock = ManualClock()
    config = SupervisorConfig(
        max_restarts=100,
        within_seconds=60,
        backoff_initial=0.001,
        backoff_max=1.0,
        backoff_jitter=0.0,
    )
    calls = 0
    serving = anyio.Event()

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal calls
        calls += 1
        task_status.started()
        if calls == 3:
            clock.now += 61  # this run stayed healthy for longer than the window
        if calls <= 3:
            raise Boom(f"crash {calls}")
        serving.set()
        await anyio.sleep_forever()

    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], config, clock=clock)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            with anyio.fail_after(DEADLINE):
                await serving.wait()
            supervisor.request_shutdown()

    assert logged_backoffs(logs) == pytest.approx([0.001, 0.002, 0.001])


@given(
    consecutive=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.0, max_value=10.0),
    ceiling=st.floats(min_value=10.0, max_value=600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(),
)
def test_restart_backoff_stays_within_jitter_and_cap(
    consecutive: int, initial: float, ceiling: float, jitter: float, seed: int
) -> None:
    config = SupervisorConfig(backoff_initial=initial, backoff_max=ceiling, backoff_jitter=jitter)

    delay = config.backoff.delay(consecutive, random.Random(seed))

    unjittered = min(initial * 2.0 ** min(consecutive - 1, 64), ceiling)
    assert unjittered * (1 - jitter) - 1e-9 <= delay <= min(unjittered * (1 + jitter), ceiling)


# --- shutdown ---------------------------------------------------------------


async def test_first_shutdown_request_is_graceful_cleanup_runs() -> None:
    cleanup_began = anyio.Event()
    may_finish = anyio.Event()
    cleanup_finished = False

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cleanup_finished
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with cleanup_scope(LONG_CLEANUP):
                cleanup_began.set()
                await may_finish.wait()
                cleanup_finished = True

    supervisor = Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT)], SupervisorConfig(grace_period=3600)
    )
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.request_shutdown()
            await cleanup_began.wait()
            may_finish.set()

    assert cleanup_finished
    assert supervisor.shutdown_requested
    assert not supervisor.forced
    assert supervisor.statistics().tasks["sync"].state == "stopped"


async def test_second_shutdown_request_forces() -> None:
    cleanup_began = anyio.Event()
    cleanup_finished = False

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cleanup_finished
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with cleanup_scope(LONG_CLEANUP):
                cleanup_began.set()
                await anyio.sleep_forever()
                cleanup_finished = True

    supervisor = Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT)], SupervisorConfig(grace_period=3600)
    )
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.request_shutdown()
            await cleanup_began.wait()
            supervisor.request_shutdown()

    assert supervisor.forced
    assert not cleanup_finished


@pytest.mark.virtual_time
async def test_cleanup_cut_off_when_grace_period_ends(time_is_virtual: bool) -> None:
    grace = 10.0 if time_is_virtual else 0.01
    cleanup_finished = False

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cleanup_finished
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with cleanup_scope(LONG_CLEANUP):
                await anyio.sleep_forever()
                cleanup_finished = True

    supervisor = Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT)], SupervisorConfig(grace_period=grace)
    )
    with anyio.fail_after(DEADLINE + grace):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            requested_at = anyio.current_time()
            supervisor.request_shutdown()

    assert not cleanup_finished
    assert not supervisor.forced
    if time_is_virtual:
        assert anyio.current_time() - requested_at == pytest.approx(grace)


@pytest.mark.virtual_time
async def test_cleanup_under_way_when_shutdown_begins_is_cut_off_after_grace_period(
    time_is_virtual: bool,
) -> None:
    grace = 10.0 if time_is_virtual else 0.01
    cleanup_began = anyio.Event()
    cleanup_finished = False

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cleanup_finished
        task_status.started()
        try:
            raise Boom("crash")
        finally:
            with cleanup_scope(LONG_CLEANUP):
                cleanup_began.set()
                await anyio.sleep_forever()
                cleanup_finished = True

    supervisor = Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT)], SupervisorConfig(grace_period=grace)
    )
    with anyio.fail_after(DEADLINE + grace):
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            await cleanup_began.wait()
            requested_at = anyio.current_time()
            supervisor.request_shutdown()

    assert not cleanup_finished
    if time_is_virtual:
        assert anyio.current_time() - requested_at == pytest.approx(grace)


@pytest.mark.virtual_time
async def test_cleanup_scope_defaults_to_configured_cleanup_timeout(time_is_virtual: bool) -> None:
    cleanup_timeout = 7.0 if time_is_virtual else 0.01
    cut_off_at: float | None = None

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cut_off_at
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with cleanup_scope() as scope:
                await anyio.sleep_forever()
            if scope.cancelled_caught:
                cut_off_at = anyio.current_time()

    config = SupervisorConfig(grace_period=3600, cleanup_timeout=cleanup_timeout)
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], config)
    with anyio.fail_after(DEADLINE + cleanup_timeout):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            requested_at = anyio.current_time()
            supervisor.request_shutdown()

    assert cut_off_at is not None
    if time_is_virtual:
        assert cut_off_at - requested_at == pytest.approx(cleanup_timeout)


async def test_shutdown_requested_before_run_starts_no_task() -> None:
    task = FlakyTask(crashes=0)
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)])
    supervisor.request_shutdown()

    with anyio.fail_after(DEADLINE):
        await supervisor.run()

    assert task.runs == 0


async def test_shutdown_during_backoff_stops_without_restart() -> None:
    runs = 0
    crashing = anyio.Event()

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        crashing.set()
        raise Boom("crash")

    config = SupervisorConfig(backoff_initial=3600, backoff_max=3600, backoff_jitter=0.0)
    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)], config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await crashing.wait()
        state_after_crash = supervisor.statistics().tasks["sync"].state
        supervisor.request_shutdown()

    assert state_after_crash == "backoff"
    assert runs == 1
    assert supervisor.statistics().tasks["sync"].state == "stopped"


async def test_real_sigterm_triggers_graceful_shutdown() -> None:
    cleanup_finished = False

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cleanup_finished
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with cleanup_scope(LONG_CLEANUP):
                await anyio.lowlevel.checkpoint()
                cleanup_finished = True

    supervisor = Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT)], install_signal_handlers=True
    )
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            os.kill(os.getpid(), signal.SIGTERM)

    assert supervisor.shutdown_requested
    assert not supervisor.forced
    assert cleanup_finished


async def test_second_real_sigterm_forces_shutdown() -> None:
    cleanup_began = anyio.Event()
    cleanup_finished = False

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal cleanup_finished
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with cleanup_scope(LONG_CLEANUP):
                cleanup_began.set()
                await anyio.sleep_forever()
                cleanup_finished = True

    supervisor = Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT)],
        # No minimum gap: this test is about real signals, not about their timing.
        SupervisorConfig(grace_period=3600, force_signal_gap=0),
        install_signal_handlers=True,
    )
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            os.kill(os.getpid(), signal.SIGTERM)
            await cleanup_began.wait()
            forced_after_first_signal = supervisor.forced
            os.kill(os.getpid(), signal.SIGTERM)

    assert not forced_after_first_signal
    assert supervisor.forced
    assert not cleanup_finished


async def test_a_fatal_error_stops_the_supervisor_without_restarts() -> None:
    runs = 0

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        async with anyio.create_task_group():  # the error comes wrapped, as from a task group
            raise Boom("credentials revoked")

    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT, fatal=(Boom,))], FAST)
    with anyio.fail_after(DEADLINE), pytest.raises(RequiredTaskFailed) as caught:
        await supervisor.run()

    assert runs == 1
    assert isinstance(caught.value.__cause__, Boom)


# --- draining in-flight work on shutdown --------------------------------------


class DrainingTask:
    """Serves until cancelled; `drain` waits until its work in hand is done.

    Records whether it was cancelled before the work in hand finished.
    """

    def __init__(self) -> None:
        self.serving = anyio.Event()
        self.drain_called = anyio.Event()
        self.work_done = anyio.Event()
        self.cancelled_with_work_in_hand: bool | None = None

    async def __call__(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.serving.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled_with_work_in_hand = not self.work_done.is_set()
            raise

    async def drain(self) -> None:
        self.drain_called.set()
        await self.work_done.wait()


def draining_supervisor(task: DrainingTask, **config: float) -> Supervisor:
    return Supervisor(
        [TaskSpec("sync", task, RestartPolicy.PERMANENT, drain=task.drain)],
        SupervisorConfig(**config),  # type: ignore[arg-type]
    )


async def test_graceful_shutdown_lets_the_work_in_hand_finish_before_cancelling() -> None:
    task = DrainingTask()
    supervisor = draining_supervisor(task, grace_period=3600)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.request_shutdown()
            await task.drain_called.wait()
            for _ in range(10):  # the supervisor had every chance to cancel early
                await anyio.lowlevel.checkpoint()
            ready_while_draining = supervisor.statistics().ready
            cancelled_early = task.cancelled_with_work_in_hand is not None
            task.work_done.set()

    assert not cancelled_early
    assert not ready_while_draining
    assert task.cancelled_with_work_in_hand is False
    assert supervisor.statistics().tasks["sync"].state == "stopped"


@pytest.mark.virtual_time
async def test_work_in_hand_is_cancelled_when_the_grace_period_ends(time_is_virtual: bool) -> None:
    grace = 10.0 if time_is_virtual else 0.05
    task = DrainingTask()
    supervisor = draining_supervisor(task, grace_period=grace)
    with anyio.fail_after(DEADLINE + grace):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            requested_at = anyio.current_time()
            supervisor.request_shutdown()
    stopped_after = anyio.current_time() - requested_at

    assert task.cancelled_with_work_in_hand is True
    if time_is_virtual:
        assert stopped_after == pytest.approx(grace)


async def test_a_second_request_ends_the_drain_at_once() -> None:
    task = DrainingTask()
    supervisor = draining_supervisor(task, grace_period=3600)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.request_shutdown()
            await task.drain_called.wait()
            supervisor.request_shutdown()

    assert supervisor.forced
    assert task.cancelled_with_work_in_hand is True


@pytest.mark.virtual_time
async def test_two_signals_at_once_are_one_graceful_stop(time_is_virtual: bool) -> None:
    task = DrainingTask()
    supervisor = draining_supervisor(task, grace_period=3600)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            # What a process-group kill through `uv run` delivers: the same SIGTERM twice.
            supervisor.handle_signal(signal.SIGTERM)
            supervisor.handle_signal(signal.SIGTERM)
            await task.drain_called.wait()
            forced = supervisor.forced
            task.work_done.set()

    assert supervisor.shutdown_requested
    assert not forced
    assert task.cancelled_with_work_in_hand is False


@pytest.mark.virtual_time
async def test_a_second_signal_a_second_later_forces(time_is_virtual: bool) -> None:
    gap = 1.0 if time_is_virtual else 0.05
    task = DrainingTask()
    supervisor = draining_supervisor(task, grace_period=3600, force_signal_gap=gap)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.handle_signal(signal.SIGTERM)
            await task.drain_called.wait()
            await anyio.sleep(gap)
            supervisor.handle_signal(signal.SIGINT)

    assert supervisor.forced
    assert task.cancelled_with_work_in_hand is True


async def test_other_tasks_keep_running_until_the_drain_ends() -> None:
    task = DrainingTask()
    other_cancelled = anyio.Event()

    async def other(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            other_cancelled.set()

    supervisor = Supervisor(
        [
            TaskSpec("sync", task, RestartPolicy.PERMANENT, drain=task.drain),
            TaskSpec("http", other, RestartPolicy.PERMANENT),
        ],
        SupervisorConfig(grace_period=3600),
    )
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.request_shutdown()
            await task.drain_called.wait()
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            http_cancelled_during_drain = other_cancelled.is_set()
            task.work_done.set()

    # Everything else keeps running (health, the platform pool) until the drain ends.
    assert not http_cancelled_during_drain
    assert other_cancelled.is_set()


async def test_cancellation_from_outside_propagates() -> None:
    serving = anyio.Event()

    async def task(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        serving.set()
        await anyio.sleep_forever()

    supervisor = Supervisor([TaskSpec("sync", task, RestartPolicy.PERMANENT)])
    run_returned = False

    async def cancel_once_serving() -> None:
        await serving.wait()
        outer.cancel()

    with anyio.fail_after(DEADLINE), anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_once_serving)
            await supervisor.run()
            run_returned = True

    assert outer.cancelled_caught
    assert not run_returned
    assert supervisor.statistics().tasks["sync"].state == "stopped"


# --- statistics and API -----------------------------------------------------


async def test_statistics_counts_restarts_per_task() -> None:
    flaky = FlakyTask(crashes=2)
    supervisor = Supervisor(
        [
            TaskSpec("sync", flaky, RestartPolicy.PERMANENT),
            TaskSpec("http", serve_forever, RestartPolicy.PERMANENT),
        ],
        FAST,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(DEADLINE):
            await flaky.serving.wait()
        stats = supervisor.statistics()
        supervisor.request_shutdown()

    assert stats.tasks["sync"].restarts == 2
    assert stats.tasks["sync"].last_error == repr(Boom("crash 2"))
    assert stats.tasks["http"].restarts == 0
    assert stats.tasks["http"].last_error is None


async def test_statistics_not_ready_once_shutdown_begins() -> None:
    supervisor = Supervisor([TaskSpec("sync", serve_forever, RestartPolicy.PERMANENT)])
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        ready_before = supervisor.statistics().ready
        supervisor.request_shutdown()
        ready_during = supervisor.statistics().ready

    assert ready_before
    assert not ready_during
    assert not supervisor.statistics().ready


def test_duplicate_task_names_rejected() -> None:
    with pytest.raises(ValueError, match="sync"):
        Supervisor(
            [
                TaskSpec("sync", serve_forever, RestartPolicy.PERMANENT),
                TaskSpec("sync", serve_forever, RestartPolicy.TRANSIENT),
            ]
        )


def test_invalid_config_names_the_setting() -> None:
    with pytest.raises(ValueError, match="backoff_jitter"):
        SupervisorConfig(backoff_jitter=2.0)


async def test_run_twice_is_an_error() -> None:
    supervisor = Supervisor([])
    await supervisor.run()

    with pytest.raises(RuntimeError, match="once"):
        await supervisor.run()


def test_public_api() -> None:
    assert set(runtime.supervisor.__all__) == {
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
    }
