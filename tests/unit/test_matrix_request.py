"""runtime/matrix/request.py: the one helper every raw HTTP call of the adapter goes through.

A fake nio client records what was sent and answers with a scripted response; the
helper against a real Synapse is exercised by tests/e2e/test_matrix_nio.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import pytest

from contracts.matrix import MatrixAuthError, MatrixRateLimited, MatrixUnreachable
from runtime.matrix.request import RawRequests


@dataclass
class FakeContent:
    chunks: list[bytes]
    error: BaseException | None = None

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


@dataclass
class FakeResponse:
    status: int
    body: bytes = b""
    read_error: BaseException | None = None
    closed: bool = False
    content: FakeContent = field(default_factory=lambda: FakeContent([]))

    @property
    def content_length(self) -> int | None:
        return len(self.body)

    async def read(self) -> bytes:
        if self.read_error is not None:
            raise self.read_error
        return self.body

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed = True


@dataclass
class FakeClient:
    """nio's ``send`` as the helper uses it; records (method, path, data, headers, timeout)."""

    answer: FakeResponse | BaseException
    access_token: str = "syt_token"
    sent: list[tuple[str, str, Any, dict[str, str], float | None]] = field(default_factory=list)

    async def send(
        self,
        method: str,
        path: str,
        data: Any,
        headers: dict[str, str],
        *,
        timeout: float | None,
    ) -> FakeResponse:
        self.sent.append((method, path, data, headers, timeout))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


async def test_json_sends_the_body_with_the_current_token_and_default_timeout() -> None:
    client = FakeClient(FakeResponse(200, b'{"ok": true}'))
    raw = RawRequests(client, timeout=7.0)
    client.access_token = "syt_later"  # a login after construction is seen

    assert await raw.json("PUT", "/p", {"a": 1}) == {"ok": True}
    assert client.sent == [
        (
            "PUT",
            "/p",
            '{"a": 1}',
            {"Authorization": "Bearer syt_later", "Content-Type": "application/json"},
            7.0,
        )
    ]


async def test_json_of_an_empty_2xx_body_is_an_empty_object() -> None:
    raw = RawRequests(FakeClient(FakeResponse(200, b"")), timeout=1.0)

    assert await raw.json("POST", "/leave") == {}


async def test_a_2xx_that_is_not_json_is_unreachable() -> None:
    raw = RawRequests(FakeClient(FakeResponse(200, b"<html>proxy</html>")), timeout=1.0)

    with pytest.raises(MatrixUnreachable) as caught:
        await raw.json("GET", "/sync")
    assert caught.value.status == 200


async def test_an_error_answer_maps_through_its_body_and_the_response_is_closed() -> None:
    response = FakeResponse(429, b'{"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 2500}')
    raw = RawRequests(FakeClient(response), timeout=1.0)

    with pytest.raises(MatrixRateLimited) as caught:
        async with raw.open("GET", "/x"):
            pytest.fail("the block must not run for an error answer")
    assert caught.value.retry_after == 2.5
    assert response.closed


async def test_an_error_answer_without_json_still_maps_by_status() -> None:
    raw = RawRequests(FakeClient(FakeResponse(401, b"nope")), timeout=1.0)

    with pytest.raises(MatrixAuthError):
        await raw.json("GET", "/x")


async def test_a_transport_error_on_send_is_unreachable() -> None:
    raw = RawRequests(FakeClient(aiohttp.ClientConnectionError("refused")), timeout=1.0)

    with pytest.raises(MatrixUnreachable):
        await raw.json("GET", "/x")


async def test_a_transport_error_while_the_block_reads_is_unreachable() -> None:
    content = FakeContent([b"abc"], error=aiohttp.ClientPayloadError("cut off"))
    raw = RawRequests(FakeClient(FakeResponse(200, content=content)), timeout=1.0)
    received = bytearray()

    async def read_all() -> None:
        async with raw.open("GET", "/media", content_type=None, timeout=3.0) as response:
            async for chunk in response.content.iter_chunked(1024):
                received.extend(chunk)

    with pytest.raises(MatrixUnreachable):
        await read_all()
    assert received == b"abc"


async def test_open_without_content_type_and_with_its_own_timeout() -> None:
    client = FakeClient(FakeResponse(200, b"data"))
    raw = RawRequests(client, timeout=1.0)

    async with raw.open("GET", "/media", content_type=None, timeout=120.0) as response:
        assert await response.read() == b"data"
    assert client.sent[0][3] == {"Authorization": "Bearer syt_token"}
    assert client.sent[0][4] == 120.0


async def test_other_errors_in_the_block_pass_through_unchanged() -> None:
    raw = RawRequests(FakeClient(FakeResponse(200, b"{}")), timeout=1.0)

    with pytest.raises(KeyError):
        async with raw.open("GET", "/x"):
            raise KeyError("mine")
