"""A counting HTTP reverse proxy on loopback, in front of Synapse: `python -m benchmarks.proxy`.

The bot is pointed at it instead of at Synapse, so every request the bot makes is
seen and timed without touching the bot. One JSON line per request goes to the log
file: method, path (no query string, so no token or filter text), a few sync query
flags, status, response bytes, and CLOCK_MONOTONIC times (shared by all processes on
the machine) for the request's arrival and the response's last byte.

Bodies are streamed both ways unchanged (no decompression), so the proxy adds well
under a millisecond per request and a few milliseconds per megabyte.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes itself.
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_CHUNK = 64 * 1024


def _forwarded(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _DROP}


def _sync_flags(query: str) -> dict[str, Any]:
    params = parse_qs(query)
    return {
        "since": "since" in params,
        "full_state": params.get("full_state", ["false"])[0] == "true",
        "timeout_ms": int(params["timeout"][0])
        if params.get("timeout", [""])[0].isdigit()
        else None,
    }


def make_app(upstream: str, log: IO[str]) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def on_startup(_app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )

    async def on_cleanup(_app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        assert session is not None
        started = time.monotonic()
        body = await request.read()
        record: dict[str, Any] = {"method": request.method, "path": request.path, "t0": started}
        if request.path.endswith("/sync"):
            record["sync"] = _sync_flags(request.query_string)
        size = 0
        try:
            async with session.request(
                request.method,
                upstream + request.path_qs,
                headers=_forwarded(request.headers),
                data=body or None,
                allow_redirects=False,
            ) as answer:
                record["t_head"] = time.monotonic()
                response = web.StreamResponse(
                    status=answer.status, headers=_forwarded(answer.headers)
                )
                if answer.content_length is not None:
                    response.content_length = answer.content_length
                await response.prepare(request)
                async for chunk in answer.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    await response.write(chunk)
                await response.write_eof()
                record["status"] = answer.status
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            record["status"] = 0
            record["error"] = type(exc).__name__
            raise
        finally:
            record["t1"] = time.monotonic()
            record["bytes"] = size
            log.write(json.dumps(record, separators=(",", ":")) + "\n")
            log.flush()
        return response

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def read_log(path: Path) -> list[dict[str, Any]]:
    """The proxy's request records so far (a half-written last line is skipped)."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8008")
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    with args.log.open("a", encoding="utf-8") as log:
        web.run_app(
            make_app(args.upstream.rstrip("/"), log),
            host="127.0.0.1",
            port=args.port,
            print=lambda *_: print("proxy ready", flush=True),
            access_log=None,
            handle_signals=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
