"""Structured logging: JSON lines when not on a terminal (containers), console otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from tasks.redact import redact

SECRET_KEYS = frozenset({"password", "access_token", "token", "secret", "authorization"})


def _redact(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Last line of defence: a secret-looking key never reaches the output."""
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "**********"
    return event


def _redact_text(
    _: object, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Credentials inside text (a URL's userinfo or query, a bearer token) are masked.

    Runs after exceptions are formatted, so a traceback's URLs are covered too.
    """
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """Set up structlog and route stdlib logging (nio, httpx) through it."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_text,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries are chatty at INFO; their warnings still come through.
    for noisy in ("nio", "httpx", "httpcore", "aiohttp", "peewee"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
