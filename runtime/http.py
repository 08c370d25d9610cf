"""The bot's own HTTP endpoints: /health, /ready, /metrics.

A deliberately tiny HTTP/1.1 responder on anyio sockets, so it runs the same
under asyncio and trio. GET only; one request per connection.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import structlog

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 8192


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool],
        metrics: Callable[[], bytes],
    ) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._metrics = metrics
        self.bound_port: int | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            self.bound_port = listener.extra(anyio.abc.SocketAttribute.local_port)
            log.info("http.listening", host=self.host, port=self.bound_port)
            task_status.started()
            await listener.serve(self._serve)

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(10):
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
                        request += await stream.receive(4096)
                    status, ctype, body = self.respond(request)
                    head = (
                        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    )
                    await stream.send(head.encode() + body)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return

    def respond(self, request: bytes) -> tuple[str, str, bytes]:
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) < 2:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, path = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/health":
            return "200 OK", "application/json", b'{"status":"alive"}\n'
        if path == "/ready":
            if self._ready():
                return "200 OK", "application/json", b'{"ready":true}\n'
            return "503 Service Unavailable", "application/json", b'{"ready":false}\n'
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4", self._metrics()
        return "404 Not Found", "text/plain", b"not found\n"
