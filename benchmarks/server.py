"""A minimal keep-alive HTTP/1.1 server on 127.0.0.1 for the whole-client benchmark.

It answers every request with the same small 200 response and does nothing else, so
that the client, not the server, is the bottleneck and the bare-vs-breaker ratio shows
the client-side cost. Run as a separate process (``python -m benchmarks.server``): it
prints its port on stdout and serves until stdin closes or it is killed.

Requests are assumed to have no body (the benchmark only sends GETs).
"""

from __future__ import annotations

import asyncio
import sys

BODY = b'{"ok":true}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        complete = buffer.count(b"\r\n\r\n")
        if complete:
            assert self._transport is not None
            self._transport.write(RESPONSE * complete)
            buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
        self._buffer = buffer


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    # Serve until our parent closes stdin (or kills us).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(_serve())
