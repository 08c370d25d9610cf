"""The one helper for the adapter's raw HTTP requests (no nio import).

Endpoints whose answers must stay raw JSON (``/sync``, room state, ``/messages``,
account data), that nio cannot express (leave with a reason) or that need a streamed
body with a size limit and a bounded timeout (media: nio's ``upload``/``download``
have no timeout at all) go through :meth:`RawRequests.open` on nio's own aiohttp
session (its ``send``), with the client's current access token. Every such request
maps failures the same way: a transport error (aiohttp.ClientError, TimeoutError),
also while the body is read, is MatrixUnreachable; a non-2xx answer is the error
:func:`runtime.matrix.parse.error_from_body` names.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp

from contracts.matrix import JsonDict, MatrixUnreachable
from runtime.matrix.parse import error_from_body, json_or_none

__all__ = ["TRANSPORT_ERRORS", "Call", "PathOf", "RawRequests"]

TRANSPORT_ERRORS: Final = (aiohttp.ClientError, TimeoutError)

# The adapter's helpers handed to its collaborators (runtime/matrix/login.py, e2ee.py):
# NioMatrix._call (a nio call's success response, or the mapped error) and _path.
Call = Callable[..., Awaitable[Any]]
PathOf = Callable[..., str]


class RawRequests:
    """Authenticated requests on a nio client's HTTP session (anything with nio's ``send``)."""

    def __init__(self, client: Any, *, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        data: str | bytes | None = None,
        *,
        content_type: str | None = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request transport timeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The 2xx response, open while the block reads it; raises the mapped error otherwise.

        Transport errors raised inside the block (a body cut off half way) are mapped too.
        """
        headers = {"Authorization": f"Bearer {self._client.access_token}"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = await self._client.send(
                method,
                path,
                data,
                headers,
                timeout=self._timeout if timeout is None else timeout,
            )
            async with response:
                if not 200 <= response.status < 300:
                    raise error_from_body(response.status, json_or_none(await response.read()))
                yield response
        except TRANSPORT_ERRORS as exc:
            raise MatrixUnreachable(f"homeserver unreachable: {exc!r}") from exc

    async def read(
        self,
        method: str,
        path: str,
        data: str | bytes | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request transport timeout
    ) -> bytes:
        """The raw 2xx body of a JSON request (``/sync`` parses it room by room)."""
        async with self.open(method, path, data, timeout=timeout) as response:
            return await response.read()

    async def json(
        self,
        method: str,
        path: str,
        body: JsonDict | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request transport timeout
    ) -> Any:
        """A JSON request; returns the parsed 2xx body (``{}`` for an empty one)."""
        data = json.dumps(body) if body is not None else None
        async with self.open(method, path, data, timeout=timeout) as response:
            status = response.status
            raw = await response.read()
        if not raw:
            return {}
        parsed = json_or_none(raw)
        if parsed is None:
            raise MatrixUnreachable("answer is not JSON", status=status)
        return parsed
