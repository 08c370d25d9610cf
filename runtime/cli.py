"""The `surface` command line.

    surface run [--backend asyncio|trio]    run the bot (embedded local Synapse when
                                            MATRIX_HOMESERVER is not set)
    surface reconcile [--dry-run]           rebuild local state from Matrix, print the report
    surface reset --mode MODE [--dry-run] [--yes]   dev/QA: forget local (and server) state
    surface check-config [--probe]          validate settings and the agent registry (probe:
                                            agents' health, the device's cross-signing)
    surface dev-homeserver                  a local Synapse for manual testing

Exit codes: 0 ok, 1 runtime failure, 2 configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import structlog

from contracts.matrix import MatrixAuthError
from contracts.store import StoreError
from runtime.logging import configure_logging
from runtime.settings import Settings, SettingsError, load_settings, read_legacy_settings

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
DEMO_USER = "demo"
BOT_USER = "lambda-bot"
EMBEDDED_CREDENTIALS = "embedded-credentials.json"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.surface_log_format, settings.surface_log_level)
    if args.command != "check-config":  # check-config lists them in its own answer
        for warning in read_legacy_settings().warnings:
            print(f"warning: {warning}", file=sys.stderr)
    try:
        result: int = args.func(settings, args)
        return result
    except (SettingsError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MatrixAuthError as exc:
        print(
            f"error: the homeserver refused the bot's credentials ({exc}). Check MATRIX_USER_ID "
            "and MATRIX_PASSWORD / MATRIX_ACCESS_TOKEN.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        # Imported only now: the registry's module (yaml, its models) is not needed
        # before `run` sends its start-up snapshot request (cmd_run).
        from contracts.registry import RegistryError

        if isinstance(exc, RegistryError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="surface", description="lambda-surface Matrix bot")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the bot")
    run.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    run.set_defaults(func=cmd_run)

    rec = sub.add_parser("reconcile", help="rebuild local state from Matrix and print the report")
    rec.add_argument("--dry-run", action="store_true", help="report only, change nothing")
    rec.set_defaults(func=cmd_reconcile)

    reset = sub.add_parser("reset", help="dev/QA: forget the bot's local (and server) state")
    reset.add_argument("--mode", choices=["local-only", "server-leave-forget"], required=True)
    reset.add_argument("--dry-run", action="store_true")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset)

    check = sub.add_parser("check-config", help="validate settings and the agent registry")
    check.add_argument(
        "--probe",
        action="store_true",
        help="also call each http agent's health and check that the bot's device is cross-signed",
    )
    check.set_defaults(func=cmd_check_config)

    dev = sub.add_parser("dev-homeserver", help="run a local Synapse for manual testing")
    dev.add_argument("--data-dir", type=Path, default=None)
    dev.add_argument("--port", type=int, default=None)
    dev.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="register this user (repeatable)",
    )
    dev.set_defaults(func=cmd_dev_homeserver)
    return parser


# -- run ---------------------------------------------------------------------------------------


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from runtime.matrix.snapshot import SnapshotPrefetch

    # First, before the heavy imports below: Synapse computes while Python imports.
    prefetch = None if settings.embedded else SnapshotPrefetch.start(settings)

    from runtime.app import load_agents, run
    from runtime.supervisor import SupervisorError

    load_agents(settings)  # fail fast on a bad registry
    if settings.embedded:
        return _run_embedded(settings, args.backend)
    try:
        run(settings, backend=args.backend, prefetch=prefetch)
    except SupervisorError as exc:
        log.error("bot.failed", reason=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _run_embedded(settings: Settings, backend: str) -> int:
    """No homeserver configured: start a local Synapse, register the bot and a demo user."""
    from runtime.app import run
    from runtime.supervisor import SupervisorError

    with _embedded(settings, create=True) as (local, demo):
        print(
            "\nlambda-surface is running with the in-process echo agent.\n"
            f"  homeserver:  {local.matrix_homeserver}\n"
            f"  demo user:   {demo[0]}   password: {demo[1]}\n"
            f"  bot:         {local.matrix_user_id}\n"
            "Log in with any Matrix client (e.g. Element: 'Edit' the homeserver to the URL "
            "above), start a direct chat with the bot, and it creates your Space.\n"
            f"Health: http://{settings.surface_http_addr}/ready   Stop: Ctrl-C\n",
            flush=True,
        )
        try:
            run(local, backend=backend)  # type: ignore[arg-type]
        except SupervisorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK


def embedded_settings(settings: Settings, *, base_url: str, bot_user_id: str) -> Settings:
    """The settings `surface run` uses against the embedded Synapse (state beside it)."""
    data_dir = settings.surface_dev_data_dir
    creds = _embedded_credentials(data_dir / EMBEDDED_CREDENTIALS)
    server_name = bot_user_id.split(":", 1)[1]
    return settings.model_copy(
        update={
            "matrix_homeserver": base_url,
            "matrix_user_id": bot_user_id,
            "matrix_password": _secret(creds["bot"]),
            "matrix_db_path": _under(data_dir, settings.matrix_db_path),
            "matrix_store_path": _under(data_dir, settings.matrix_store_path),
            "surface_allowed_users": settings.surface_allowed_users or (f"@*:{server_name}",),
        }
    )


def embedded_state_paths(settings: Settings) -> Settings:
    """The quick-start (`just run`) state: database and store under the dev data dir."""
    data_dir = settings.surface_dev_data_dir
    return settings.model_copy(
        update={
            "matrix_db_path": _under(data_dir, settings.matrix_db_path),
            "matrix_store_path": _under(data_dir, settings.matrix_store_path),
        }
    )


@contextmanager
def _embedded(settings: Settings, *, create: bool) -> Iterator[tuple[Settings, tuple[str, str]]]:
    """The embedded local Synapse, started (and stopped on exit), with the bot logged in.

    `create=False` (reconcile, reset): only where `just run` has left its state.
    """
    from runtime.dev.homeserver import HomeserverConfig, LocalHomeserver

    data_dir = settings.surface_dev_data_dir
    secrets_file = data_dir / EMBEDDED_CREDENTIALS
    if not create and not secrets_file.exists():
        raise SettingsError(
            f"MATRIX_HOMESERVER is not set and there is no quick-start state in {data_dir} "
            "(`just run` keeps it there). Set MATRIX_HOMESERVER, MATRIX_USER_ID and "
            "MATRIX_PASSWORD for your homeserver, or SURFACE_DEV_DATA_DIR for another dev dir."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = _embedded_credentials(secrets_file)
    homeserver = LocalHomeserver(
        HomeserverConfig(data_dir=data_dir / "synapse", port=settings.surface_dev_port)
    )
    print(
        "Starting the local Synapse (embedded default; set MATRIX_HOMESERVER to use yours)...",
        file=sys.stderr if not create else sys.stdout,
    )
    homeserver.start()
    try:
        bot = homeserver.register_user(BOT_USER, creds["bot"])
        demo = homeserver.register_user(DEMO_USER, creds["demo"])
        local = embedded_settings(settings, base_url=homeserver.base_url, bot_user_id=bot.user_id)
        yield local, (demo.user_id, creds["demo"])
    finally:
        homeserver.stop()


def _embedded_credentials(path: Path) -> dict[str, str]:
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    creds = {"bot": secrets.token_urlsafe(16), "demo": secrets.token_urlsafe(9)}
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(creds, handle)
    return creds


def _secret(value: str) -> object:
    from pydantic import SecretStr

    return SecretStr(value)


def _under(data_dir: Path, path: Path) -> Path:
    """Embedded runs keep their state beside the local Synapse unless a path was given."""
    return path if path.is_absolute() or path.parent != Path() else data_dir / path


# -- reconcile ---------------------------------------------------------------------------------


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Reconcile once and print the report; with --dry-run nothing is written or sent.

    A legacy key-value database is migrated first (see runtime/legacy_db.py); a dry run
    migrates a temporary copy instead, so its report shows what the real run would do.
    """
    with ExitStack() as stack:
        if settings.embedded:
            settings, _demo = stack.enter_context(_embedded(settings, create=False))
        return _reconcile(settings, args)


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> dict[str, object]:
        import tempfile

        from runtime.app import close_matrix, connect_matrix, load_agents
        from runtime.legacy_db import copy_database, detect_legacy, migrate_legacy_database
        from runtime.store import OPEN_BUSY_TIMEOUT, SqliteStore
        from tasks.reconcile import reconcile

        default_agent = load_agents(settings).default.id
        with tempfile.TemporaryDirectory() as tmp:
            db_path = settings.matrix_db_path
            if args.dry_run and detect_legacy(db_path) is not None:
                db_path = copy_database(db_path, Path(tmp) / db_path.name)
            migration = migrate_legacy_database(db_path)
            # A one-shot command: nothing else waits on its loop, so it may wait out a
            # running bot's write (the bot itself waits 50 ms and retries, runtime/store.py).
            with SqliteStore(db_path, busy_timeout=OPEN_BUSY_TIMEOUT) as store:
                matrix = await connect_matrix(settings, "asyncio")
                try:
                    report, _ = await reconcile(
                        store,
                        matrix,
                        dry_run=args.dry_run,
                        default_agent_id=default_agent,
                        migrated=migration.migrated if migration else 0,
                        unmapped=migration.imported.unmapped if migration else (),
                    )
                finally:
                    await close_matrix(matrix)
        return {"dry_run": args.dry_run, **report.as_dict()}

    print(json.dumps(anyio.run(go), indent=2))
    return EXIT_OK


# -- reset -------------------------------------------------------------------------------------


def cmd_reset(settings: Settings, args: argparse.Namespace) -> int:
    """Without MATRIX_HOMESERVER this resets the quick-start state that `just run` keeps."""
    from runtime.reset import plan_reset, run_reset

    if settings.embedded:
        settings = embedded_state_paths(settings)
    plan = plan_reset(settings, args.mode)
    print(plan.describe(dry_run=args.dry_run))
    if args.dry_run:
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to reset without --yes (no terminal to ask on)", file=sys.stderr)
            return EXIT_CONFIG
        answer = input("Type 'reset' to go on: ").strip()
        if answer != "reset":
            print("nothing changed")
            return EXIT_OK
    with ExitStack() as stack:
        if args.mode == "server-leave-forget" and settings.embedded:
            settings, _demo = stack.enter_context(_embedded(settings, create=False))
        elif args.mode == "server-leave-forget":
            _require_homeserver(settings)
        anyio.run(run_reset, settings, plan)
    print(plan.manual_steps())
    return EXIT_OK


# -- check-config ------------------------------------------------------------------------------


def cmd_check_config(settings: Settings, args: argparse.Namespace) -> int:
    from contracts.registry import RegistryError
    from runtime.app import load_agents
    from runtime.platforms.check import check_agents, probe_agents

    problems: list[str] = []
    try:
        registry = load_agents(settings)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    problems.extend(check_agents(registry, os.environ))
    if args.probe:
        problems.extend(anyio.run(probe_agents, registry))
        from runtime.matrix.probe import probe_cross_signing

        cross_signing = anyio.run(probe_cross_signing, settings)
        print(cross_signing.summary)
        if cross_signing.problem is not None:
            problems.append(cross_signing.problem)
    if problems:
        print("configuration problems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    warnings = read_legacy_settings().warnings
    if warnings:
        print("configuration warnings:")
        for warning in warnings:
            print(f"  - {warning}")
    where = settings.matrix_homeserver or "embedded local Synapse (MATRIX_HOMESERVER unset)"
    print(
        f"configuration ok: homeserver {where}; registry {registry.source} with "
        f"{len(registry)} agent(s), default {registry.default.id!r}; "
        f"database {settings.matrix_db_path}; store {settings.matrix_store_path}"
    )
    return EXIT_OK


# -- dev homeserver ----------------------------------------------------------------------------


def cmd_dev_homeserver(settings: Settings, args: argparse.Namespace) -> int:
    from runtime.dev.homeserver import main_dev_homeserver

    users: list[tuple[str, str]] = []
    for spec in args.user:
        name, sep, password = spec.partition(":")
        if not sep or not name or not password:
            print(f"error: --user {spec!r} must be NAME:PASSWORD", file=sys.stderr)
            return EXIT_CONFIG
        users.append((name, password))
    data_dir = args.data_dir or settings.surface_dev_data_dir / "synapse"
    port = args.port if args.port is not None else settings.surface_dev_port
    return main_dev_homeserver(data_dir, port, users)


def _require_homeserver(settings: Settings) -> None:
    if settings.matrix_homeserver is None:
        raise SettingsError(
            "MATRIX_HOMESERVER is not set: this command talks to the bot's homeserver. "
            "Set MATRIX_HOMESERVER, MATRIX_USER_ID and MATRIX_PASSWORD (or put them in .env)."
        )


if __name__ == "__main__":
    sys.exit(main())
