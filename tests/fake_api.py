"""A loopback fake of the parts of the OpenAI API the SDK tests use, under uvicorn.

`FakeAPI` starts this file as a separate process (uvicorn serving the starlette app
below on a socket bound here, so the port is free and known before the child starts),
waits until it answers, and stops it by PID. The app speaks the real wire format:

- ``POST /v1/chat/completions``: a ``chat.completion`` object answering "pong", or with
  ``"stream": true`` the same as server-sent ``chat.completion.chunk`` events ending in
  ``data: [DONE]``.
- ``/_fake/...``: control for the tests: ``POST /_fake/fail`` (``{"status": 503}``) makes
  the completions answer that status with an OpenAI error body until
  ``POST /_fake/reset``; ``GET /_fake/stats`` counts the completions requests received.

Tests import `FakeAPI` and `need`; nothing here is part of the library.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from types import ModuleType, TracebackType
from typing import IO, TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from typing_extensions import Self


def need(module: str) -> ModuleType:
    """Import a module of the ``dev`` extra; skip without it, but fail under ``CI=true``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is missing: install the dev extra ({exc})", pytrace=False)
        pytest.skip(f"{module} is not installed (dev extra)", allow_module_level=True)


class FakeAPI:
    """The fake OpenAI API in a child process on 127.0.0.1; a context manager."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        need("uvicorn")
        need("starlette")
        # The child's output, for the failure message if it does not start; closed in
        # stop(), which outlives this method.
        self._log = tempfile.TemporaryFile()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            fd = sock.fileno()
            self._process = subprocess.Popen(
                [sys.executable, __file__, str(fd)],
                pass_fds=(fd,),
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        # The child has its own copy of the listening socket; wait until it answers.
        deadline = time.monotonic() + 30.0
        with httpx.Client(trust_env=False) as client:
            while True:
                if self._process.poll() is not None:
                    self._fail(f"the fake API exited with {self._process.returncode}")
                try:
                    client.get(f"{self.url}/_fake/stats", timeout=1.0)
                    return self
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        self._fail("the fake API did not answer within 30 s")
                    time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the child by its PID (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _fail(self, message: str) -> None:
        output = ""
        if self._log is not None:
            self._log.seek(0)
            output = self._log.read().decode(errors="replace")
        self.stop()
        pytest.fail(f"{message}; its output:\n{output}", pytrace=False)

    # Control -----------------------------------------------------------------------

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        with httpx.Client(trust_env=False) as client:
            response = client.request(method, f"{self.url}/_fake/{path}", json=body)
            response.raise_for_status()
            return response.json()

    def reset(self) -> None:
        """Healthy again, counters at zero."""
        self._control("POST", "reset")

    def fail(self, status: int) -> None:
        """Answer every completion with `status` (and an OpenAI error body)."""
        self._control("POST", "fail", {"status": status})

    @property
    def completions(self) -> int:
        """How many completions requests reached the server."""
        return int(self._control("GET", "stats")["completions"])


# The app ---------------------------------------------------------------------------


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    state: dict[str, Any] = {"completions": 0, "status": None}

    def completion(model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "pong", "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
        event = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(event)}\n\n".encode()

    async def chat_completions(request: Request) -> Response:
        state["completions"] += 1
        body = await request.json()
        model = str(body.get("model", "gpt-fake"))
        if state["status"] is not None:
            return JSONResponse(
                {
                    "error": {
                        "message": "the fake API is failing on purpose",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=state["status"],
            )
        if not body.get("stream"):
            return JSONResponse(completion(model))

        async def events() -> AsyncIterator[bytes]:
            yield chunk(model, {"role": "assistant", "content": ""}, None)
            for piece in ("po", "ng"):
                yield chunk(model, {"content": piece}, None)
            yield chunk(model, {}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def reset(request: Request) -> Response:
        state.update(completions=0, status=None)
        return JSONResponse({})

    async def fail(request: Request) -> Response:
        state["status"] = int((await request.json())["status"])
        return JSONResponse({})

    async def stats(request: Request) -> Response:
        return JSONResponse({"completions": state["completions"]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/fail", fail, methods=["POST"]),
            Route("/_fake/stats", stats, methods=["GET"]),
        ]
    )


def _serve(fd: int) -> None:
    import uvicorn

    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(_app(), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
