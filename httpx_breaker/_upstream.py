"""A small, programmable HTTP/1.1 server on 127.0.0.1 for the demo, examples and tests.

It answers on a thread of its own and records every request it receives, so a caller
can check what really reached the upstream (for instance: nothing while a breaker
was open). What it does is chosen per path, or for every other path by `mode`:

- ``/ok`` (mode ``"healthy"``): 200 with a small JSON body
- ``/status/<code>`` (mode ``"failing"``: 503): that status
- ``/delay/<seconds>`` (mode ``"slow"``: `delay`): sleep, then 200
- ``/reset`` (mode ``"reset"``): close the connection without answering
- ``/cut`` (mode ``"cut"``): headers promising 1000 bytes, 10 bytes, then close
- ``/flaky`` (mode ``"flaky"``): 503 with probability `failure_rate`, else 200
- ``/retry-after/<value>``: 503 with ``Retry-After: <value>``
- ``/hold`` (mode ``"hold"``): wait until the caller lets it go (`release`), then 200:
  a host as slow as a test wants, with no sleeps (`holding` says how many wait now)

Only ever binds the loopback address; it is not a production server.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Upstream"]

HOLD_LIMIT = 60.0  # seconds a held request waits at most, if nobody releases it


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the upstream keeps its own log; stderr stays quiet

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self._serve()

    def _serve(self) -> None:
        upstream = self.server.upstream
        path = self.path.split("?", 1)[0]
        upstream._log(self.command, path, self.headers.get("host", ""))
        parts = [p for p in path.split("/") if p]
        action = parts[0] if parts else ""
        arg = parts[1] if len(parts) > 1 else None
        if action not in {"ok", "status", "delay", "reset", "cut", "flaky", "retry-after", "hold"}:
            action, arg = upstream.mode_action()
        if action == "ok" or action == "healthy":
            self._send(200, {"ok": True})
        elif action == "status":
            self._send(int(arg or 503), {"status": int(arg or 503)})
        elif action == "delay":
            time.sleep(float(arg) if arg is not None else upstream.delay)
            self._send(200, {"ok": True, "slow": True})
        elif action == "reset":
            self._reset()
        elif action == "cut":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            # A clean close (FIN) part-way through the body: the client has the headers
            # and must notice the body is short.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_WR)
        elif action == "flaky":
            if upstream.random.random() < upstream.failure_rate:
                self._send(503, {"ok": False})
            else:
                self._send(200, {"ok": True})
        elif action == "retry-after":
            self._send(503, {"ok": False}, {"Retry-After": arg or "1"})
        elif action == "hold":
            upstream._hold()
            self._send(200, {"ok": True, "held": True})

    def _send(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST: a hard connection reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    upstream: Upstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a cancelled request, a breaker's deadline) is normal
        # here, not an error worth a traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Upstream:
    """A programmable loopback HTTP server; use as a context manager.

    Args:
        mode: what paths other than the named ones do: ``"healthy"``, ``"failing"``,
            ``"slow"``, ``"reset"``, ``"cut"``, ``"flaky"`` or ``"hold"``. Can be
            changed at any time.
        failure_rate: the share of 503s in ``"flaky"`` mode.
        delay: seconds a ``"slow"`` answer waits.
        seed: seed of the random failures, for repeatable runs.

    Attributes:
        mode: as the argument; a test may change it at any time.
        failure_rate: as the argument; may be changed at any time.
        delay: as the argument; may be changed at any time.
        random: the `random.Random` the ``"flaky"`` answers are drawn from.

    ```python
    with Upstream(mode="failing") as upstream:
        httpx.get(f"{upstream.url}/anything")      # 503
        upstream.mode = "healthy"
        httpx.get(f"{upstream.url}/anything")      # 200
        assert upstream.request_count == 2
    ```
    """

    def __init__(
        self,
        mode: str = "healthy",
        *,
        failure_rate: float = 0.5,
        delay: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.mode = mode
        self.failure_rate = failure_rate
        self.delay = delay
        self.random = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: list[tuple[float, str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # "hold": requests wait on the gate until it opens or they are given a pass.
        self._gate = threading.Condition()
        self._open = False
        self._passes = 0
        self._holding = 0
        self._max_holding = 0

    def mode_action(self) -> tuple[str, str | None]:
        """What a path that names no answer does now, as ``(action, argument)``: the
        server's reading of `mode` (``"failing"`` is ``("status", "503")``)."""
        mode = self.mode
        if mode == "failing":
            return "status", "503"
        if mode == "slow":
            return "delay", None
        return mode, None

    def _hold(self) -> None:
        with self._gate:
            self._holding += 1
            self._max_holding = max(self._max_holding, self._holding)
            try:
                # Bounded, so a test that forgets to release cannot hang a thread for ever.
                self._gate.wait_for(lambda: self._open or self._passes > 0, timeout=HOLD_LIMIT)
                if not self._open and self._passes > 0:
                    self._passes -= 1
            finally:
                self._holding -= 1

    @property
    def holding(self) -> int:
        """How many ``/hold`` requests are waiting to be answered now."""
        with self._gate:
            return self._holding

    @property
    def max_holding(self) -> int:
        """The most ``/hold`` requests that ever waited at once."""
        with self._gate:
            return self._max_holding

    def release(self, count: int | None = None) -> None:
        """Let ``/hold`` requests be answered: `count` more of them (those waiting now
        first), or (None) every one, and every later one at once, until `hold()`."""
        with self._gate:
            if count is None:
                self._open = True
            else:
                self._passes += count
            self._gate.notify_all()

    def hold(self) -> None:
        """Make ``/hold`` requests wait again (the default)."""
        with self._gate:
            self._open = False
            self._passes = 0

    def _log(self, method: str, path: str, host: str) -> None:
        with self._lock:
            self._requests.append((time.monotonic(), method, path))

    @property
    def request_count(self) -> int:
        """How many requests have reached the server."""
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[tuple[float, str, str]]:
        """`(monotonic time, method, path)` of every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def port(self) -> int:
        """The port the server listens on, on 127.0.0.1 (once started)."""
        assert self._server is not None, "the upstream is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start serving on a free port of 127.0.0.1, on a thread of its own; return
        the upstream (``with Upstream() as upstream:`` calls it for you)."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.upstream = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (leaving the ``with`` block does this)."""
        self.release()  # nothing stays held in a server that stops
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
