"""Real HTTP servers for the tests: a starlette app under uvicorn (HTTP/1.1) and hypercorn
(HTTP/2, cleartext with prior knowledge), each in a subprocess of its own.

A server binds 127.0.0.1 on a free port (the child binds port 0 and reports the port it
got), the fixture waits until it answers, and stops it by PID at teardown. The servers
are session-scoped: every test tags its requests with an ``x-test`` header of its own
(`Server.client_headers()`), so the request counter is per test even on a shared server.

Run as ``python -m tests.servers uvicorn|hypercorn`` it serves the app (what the
fixtures do). The app:

- ``/ok``: 200 ``ok``
- ``/status/<code>``: that status; ``?retry_after=V`` adds ``Retry-After: V``
- ``/delay/<seconds>``: waits, then 200 (a delay before the headers)
- ``/stream?chunks=N&pause=S&status=C``: N lines ``chunk i``, S seconds between them
- ``/sse?events=N&pause=S``: server-sent events ``data: i``, S seconds between them
- ``/cache/<name>``: ``Cache-Control: max-age=3600`` and 200 until a test flips it with
  ``/_control/cache/<name>/<status>`` (a status other than 200 is sent ``no-store``)
- ``/cut``: headers promising 1000 bytes, 10 bytes, then the connection (or HTTP/2
  stream) is dropped
- ``/redirect/<n>``: 302 to ``/redirect/<n-1>``, the last one to ``/ok``
- ``/basic-auth/<user>/<password>``, ``/digest-auth/<user>/<password>``: 401 with a
  challenge unless the credentials are right (Digest: MD5, qop=auth)
- ``/cookies/set?name=value``: sets cookies; ``/cookies``: the cookies received, as JSON
- ``/echo``: any method; the method, the body and the request headers, as JSON
- ``/json?errors=N&pad=B&parts=P&gzip=1``: a JSON object ``{"errors": [...], "pad":
  "..."}`` (N errors, B bytes of padding), streamed in P parts, gzip-compressed whole
  (``Content-Encoding: gzip``) with ``gzip=1``: what a GraphQL server answers
- ``/_control/count?tag=T[&path=P]``: how many requests tagged T (to path P) arrived;
  ``/_control/...`` requests are not counted
"""

from __future__ import annotations

import base64
import collections
import contextlib
import gzip
import hashlib
import json
import os
import secrets
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One SSL context for every client the tests build: httpx would load the CA bundle for
# each new transport (tens of ms each), though these servers speak plain HTTP.
SSL_CONTEXT = ssl.create_default_context()
TAG_HEADER = "x-test"
STARTUP_TIMEOUT = 30.0  # seconds; generous, so a busy machine is slow, not failing

# -- the app (runs in the server process) ------------------------------------------

_counts: collections.Counter[tuple[str, str]] = collections.Counter()
_cache_status: dict[str, int] = {}
_DIGEST_REALM = "httpx-breaker-tests"
_DIGEST_NONCE = secrets.token_hex(16)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # Digest auth (MD5) is the scheme under test


def make_app() -> Any:
    """The starlette app the servers run; imported lazily so collection never needs it."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    def number(request: Request, name: str, default: float) -> float:
        return float(request.query_params.get(name, default))

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def status(request: Request) -> Response:
        code = int(request.path_params["code"])
        headers = {}
        if "retry_after" in request.query_params:
            headers["Retry-After"] = request.query_params["retry_after"]
        return PlainTextResponse(f"status {code}", status_code=code, headers=headers)

    async def delay(request: Request) -> Response:
        await anyio.sleep(float(request.path_params["seconds"]))
        return PlainTextResponse("ok")

    async def stream(request: Request) -> Response:
        chunks = int(number(request, "chunks", 5))
        pause = number(request, "pause", 0.0)

        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                if i and pause:
                    await anyio.sleep(pause)
                yield f"chunk {i}\n".encode()

        code = int(number(request, "status", 200))
        return StreamingResponse(body(), status_code=code, media_type="text/plain")

    async def sse(request: Request) -> Response:
        events = int(number(request, "events", 3))
        pause = number(request, "pause", 0.0)

        async def body() -> AsyncIterator[bytes]:
            for i in range(events):
                if i and pause:
                    await anyio.sleep(pause)
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def cache(request: Request) -> Response:
        name = request.path_params["name"]
        code = _cache_status.get(name, 200)
        control = "max-age=3600" if code == 200 else "no-store"
        return PlainTextResponse(
            f"{name} {code}", status_code=code, headers={"Cache-Control": control}
        )

    async def set_cache(request: Request) -> Response:
        _cache_status[request.path_params["name"]] = int(request.path_params["code"])
        return PlainTextResponse("set")

    async def cut(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", b"1000"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        # Returning without finishing the body: the server drops the connection (HTTP/1.1)
        # or resets the stream (HTTP/2), after the client has the headers.

    async def redirect(request: Request) -> Response:
        n = int(request.path_params["n"])
        location = "/ok" if n <= 1 else f"/redirect/{n - 1}"
        return Response(status_code=302, headers={"Location": location})

    async def basic_auth(request: Request) -> Response:
        user, password = request.path_params["user"], request.path_params["password"]
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="tests"'})
        return JSONResponse({"user": user})

    async def digest_auth(request: Request) -> Response:
        user, password = request.path_params["user"], request.path_params["password"]
        challenge = (
            f'Digest realm="{_DIGEST_REALM}", nonce="{_DIGEST_NONCE}", qop="auth", '
            'algorithm=MD5, opaque="opaque"'
        )
        header = request.headers.get("authorization", "")
        if not header.startswith("Digest "):
            return Response(status_code=401, headers={"WWW-Authenticate": challenge})
        fields = dict(_digest_fields(header[len("Digest ") :]))
        ha1 = _md5(f"{user}:{_DIGEST_REALM}:{password}")
        ha2 = _md5(f"{request.method}:{fields.get('uri', '')}")
        expected = _md5(
            f"{ha1}:{_DIGEST_NONCE}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}"
        )
        if fields.get("username") != user or fields.get("response") != expected:
            return Response(status_code=401, headers={"WWW-Authenticate": challenge})
        return JSONResponse({"user": user})

    async def set_cookies(request: Request) -> Response:
        response = JSONResponse(dict(request.query_params))
        for name, value in request.query_params.items():
            response.set_cookie(name, value)
        return response

    async def cookies(request: Request) -> Response:
        return JSONResponse(dict(request.cookies))

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "body": body.decode("latin-1"),
                "headers": [[k, v] for k, v in request.headers.items()],
                "http_version": request.scope.get("http_version"),
            }
        )

    async def json_body(request: Request) -> Response:
        errors = [{"message": f"error {i}"} for i in range(int(number(request, "errors", 0)))]
        body = json.dumps({"errors": errors, "pad": "x" * int(number(request, "pad", 0))})
        data = body.encode()
        headers = {}
        if request.query_params.get("gzip") == "1":
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        parts = max(int(number(request, "parts", 1)), 1)
        size = -(-len(data) // parts)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), size):
                yield data[start : start + size]

        return StreamingResponse(chunks(), media_type="application/json", headers=headers)

    async def count(request: Request) -> Response:
        tag = request.query_params.get("tag", "")
        path = request.query_params.get("path")
        if path is None:
            total = sum(n for (t, _), n in _counts.items() if t == tag)
        else:
            total = _counts[tag, path]
        return JSONResponse({"count": total})

    routes = [
        Route("/ok", ok),
        Route("/status/{code:int}", status),
        Route("/delay/{seconds:float}", delay),
        Route("/stream", stream),
        Route("/sse", sse),
        Route("/cache/{name}", cache),
        Route("/_control/cache/{name}/{code:int}", set_cache, methods=["GET", "POST"]),
        Route("/redirect/{n:int}", redirect),
        Route("/basic-auth/{user}/{password}", basic_auth),
        Route("/digest-auth/{user}/{password}", digest_auth),
        Route("/cookies/set", set_cookies),
        Route("/cookies", cookies),
        Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/json", json_body),
        Route("/_control/count", count),
    ]
    app = Starlette(routes=routes)

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_control/"):
            headers = dict(scope["headers"])
            tag = headers.get(TAG_HEADER.encode(), b"").decode("latin-1")
            _counts[tag, scope["path"]] += 1
            if scope["path"] == "/cut":  # plain ASGI: starlette would finish the body
                await cut(scope, receive, send)
                return
        await app(scope, receive, send)

    return counting


def _digest_fields(text: str) -> Iterator[tuple[str, str]]:
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        yield name.strip(), value.strip().strip('"')


def serve(kind: str) -> None:
    """Serve the app on 127.0.0.1:<free port> with uvicorn or hypercorn; print the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    app = make_app()
    print(sock.getsockname()[1], flush=True)
    if kind == "uvicorn":
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    elif kind == "hypercorn":
        import asyncio

        import hypercorn.asyncio
        import hypercorn.config

        hconfig = hypercorn.config.Config()
        hconfig.bind = [f"fd://{sock.fileno()}"]
        hconfig.loglevel = "WARNING"
        hconfig.graceful_timeout = 0.5
        asyncio.run(hypercorn.asyncio.serve(app, hconfig))
    else:
        raise SystemExit(f"unknown server {kind!r}: uvicorn or hypercorn")


# -- the test side ------------------------------------------------------------------


class Server:
    """A running server process: its base URL, its request counter, and a way to stop it."""

    def __init__(self, kind: str, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.kind = kind
        self.process = process
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"
        self.http2 = kind == "hypercorn"

    @property
    def key(self) -> str:
        """The breaker key the transports give this server."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, tag: str, path: str | None = None) -> int:
        """How many requests tagged `tag` (to `path`, if given) reached the server."""
        import httpx

        params = {"tag": tag} if path is None else {"tag": tag, "path": path}
        # A client of its own, with no breaker: reading the counter proves nothing else.
        with httpx.Client(verify=SSL_CONTEXT, trust_env=False, timeout=10) as client:
            response = client.get(self.url("/_control/count"), params=params)
        response.raise_for_status()
        return int(response.json()["count"])

    def flip_cache(self, name: str, status: int) -> None:
        import httpx

        url = self.url(f"/_control/cache/{name}/{status}")
        with httpx.Client(verify=SSL_CONTEXT, trust_env=False, timeout=10) as client:
            client.post(url).raise_for_status()

    def stop(self) -> None:
        """Stop the process by its PID: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def new_tag() -> str:
    """A tag of one's own for the request counter."""
    return uuid.uuid4().hex


def tagged(tag: str) -> dict[str, str]:
    """The client headers that tag every request with `tag`."""
    return {TAG_HEADER: tag}


def require(*modules: str) -> None:
    """Skip when a server package is missing, except under CI=true, where it fails."""
    for module in modules:
        if os.environ.get("CI") == "true":
            __import__(module)  # an ImportError fails the test: CI must have its servers
        else:
            pytest.importorskip(module)


def start(kind: str) -> Server:
    """Start a server of `kind` in a subprocess and wait until it answers."""
    import httpx

    log = Path(tempfile.mkstemp(prefix=f"httpx-breaker-{kind}-", suffix=".log")[1])
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.servers", kind],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    assert process.stdout is not None
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout=STARTUP_TIMEOUT):
            line = process.stdout.readline()
    server = Server(kind, process, int(line) if line.strip().isdigit() else 0, log)
    if not server.port:
        server.stop()
        raise RuntimeError(f"{kind} did not start: {log.read_text(errors='replace')}")
    while True:
        try:
            ok = httpx.get(server.url("/ok"), timeout=5, trust_env=False, verify=SSL_CONTEXT)
            if ok.status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{kind} never answered: {log.read_text(errors='replace')}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def http1_server() -> Iterator[Server]:
    """The app under uvicorn: HTTP/1.1 on 127.0.0.1."""
    require("uvicorn", "starlette")
    server = start("uvicorn")
    yield server
    server.stop()
    server.log.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def http2_server() -> Iterator[Server]:
    """The app under hypercorn: HTTP/2 with prior knowledge (h2c) on 127.0.0.1."""
    require("hypercorn", "h2", "starlette")
    server = start("hypercorn")
    yield server
    server.stop()
    server.log.unlink(missing_ok=True)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "uvicorn")


__all__ = [
    "SSL_CONTEXT",
    "Server",
    "http1_server",
    "http2_server",
    "new_tag",
    "require",
    "start",
    "tagged",
]
