"""`python -m platform_agent` / `platform-agent`: serve the reference platform-agent.

Configuration comes from the environment (see platform_agent.config); uvicorn
handles SIGTERM/SIGINT with a graceful shutdown that closes the database.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog
import uvicorn

from platform_agent.app import create_app
from platform_agent.config import ConfigError, config_from_env
from platform_agent.memory import MemoryDatabaseError

log = structlog.get_logger("platform_agent")


def _configure_logging() -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )


def main() -> int:
    _configure_logging()
    try:
        config = config_from_env(os.environ)
        app = create_app(config)
    except (ConfigError, MemoryDatabaseError) as exc:
        print(exc, file=sys.stderr)
        return 2
    log.info(
        "platform_agent.starting",
        host=config.host,
        port=config.port,
        backend=config.backend,
        db=str(config.db_path),
        workspace=str(config.workspace),
        auth=config.token is not None,
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        lifespan="on",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
