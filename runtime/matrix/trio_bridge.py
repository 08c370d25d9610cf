"""Run the nio adapter (asyncio-only) from trio, through trio-asyncio.

Every coroutine method of the wrapped MatrixPort runs on the trio-asyncio
loop; callers on trio await it like a native trio function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import trio_asyncio

P = ParamSpec("P")
T = TypeVar("T")


def on_asyncio(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Wrap an asyncio coroutine function so trio code can await it."""
    bridged: Callable[P, Awaitable[T]] = trio_asyncio.aio_as_trio(func)
    return bridged


class TrioBridgedMatrix:
    """A MatrixPort whose calls hop to the asyncio loop trio-asyncio runs."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def user_id(self) -> str:
        return str(self._inner.user_id)

    @property
    def server_name(self) -> str:
        return str(self._inner.server_name)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if inspect.iscoroutinefunction(attr):
            return functools.wraps(attr)(on_asyncio(attr))
        return attr
