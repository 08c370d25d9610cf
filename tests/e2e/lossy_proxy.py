"""A loopback reverse proxy in front of Synapse that loses chosen `createRoom` answers.

The request goes through, so Synapse creates the room; the bot gets a 502
instead of the answer, as after a timeout or a gateway failing on the way back.
Runs its own event loop in a thread, so the test's loop (and blocking helpers
such as `BotProcess.start_ready`) cannot stall the bot's requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Collection
from typing import Any

import aiohttp
from aiohttp import web

from runtime.dev.process import find_free_port

# Hop-by-hop headers and the ones aiohttp sets itself (bodies are passed decoded).
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


def _forwarded(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _DROP}


class LossyProxy:
    """Forwards everything to `upstream`; the answers of the `createRoom` calls numbered
    in `lose_create_room` (from 1) are replaced by a 502. `created` lists the ids of
    every room created through it, `lost` those whose answer the bot never got."""

    def __init__(self, upstream: str, *, lose_create_room: Collection[int]) -> None:
        self.upstream = upstream.rstrip("/")
        self.lose = set(lose_create_room)
        self.port = find_free_port("127.0.0.1")
        self.created: list[str] = []
        self.lost: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the lossy proxy did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            app = web.Application(client_max_size=1024**3)
            self._session = session
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=_forwarded(request.headers),
            data=body or None,
            allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            status, headers = answer.status, _forwarded(answer.headers)
        if request.method == "POST" and request.path.endswith("/createRoom") and status == 200:
            room_id = json.loads(payload)["room_id"]
            self.created.append(room_id)
            if len(self.created) in self.lose:
                self.lost.append(room_id)
                return web.json_response(
                    {"errcode": "M_UNKNOWN", "error": "bad gateway (answer lost)"}, status=502
                )
        return web.Response(body=payload, status=status, headers=headers)
