"""One replica of the fleet test: a process with a store, a registry and a real transport.

Started by tests/test_redis_fleet.py with multiprocessing's spawn context, as
`run(index, pipe, spec)`. It runs the sync transport, or the async one under asyncio or
trio, against the parent's loopback upstream, and obeys commands from the pipe:

- ``("send", path, n, key)``: n requests one after the other; the outcome of each;
- ``("until", path, state, key, seconds)``: a request every 10 ms until the key's
  breaker reads `state` (or `seconds` pass); the outcome of each;
- ``("hang", path, key)``: a request every 10 ms until one is admitted, then wait on it
  (the parent kills the process while it waits);
- ``("advance", seconds)``: move the breakers' fake clock;
- ``("report", key)``: the breaker's state and every state change it made;
- ``("stop",)``.

An outcome is ``(t_sent, kind, detail, state, duration)``: kind ``"response"`` (detail:
the status; state: the breaker's state when the request was admitted), ``"refused"``
(detail: the CircuitOpenError's state) or ``"error"`` (detail: the exception type);
`duration` is the wall time the call took, in seconds.
The time is CLOCK_MONOTONIC, which the parent shares. Every byte this process sends to
Redis is checked: the names of the threads that sent any are in the report.
"""

from __future__ import annotations

import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import httpx
import redis

from httpx_breaker import (
    AsyncCircuitBreakerTransport,
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
)
from httpx_breaker._state import BreakerEvent
from httpx_breaker.redis import RedisStore
from httpx_breaker.testing import FakeClock

Outcome = tuple[float, str, Any, str | None, float]


def run(index: int, pipe: Connection, spec: dict[str, Any]) -> None:
    senders: set[str] = set()
    original = redis.connection.AbstractConnection.send_packed_command

    def spy(self: Any, command: Any, check_health: bool = True) -> None:
        if getattr(self, "client_name", None) == "httpx-breaker":
            senders.add(threading.current_thread().name)
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = spy  # type: ignore[method-assign]
    replica = Replica(spec, senders)
    if spec["runtime"] == "sync":
        replica.serve_sync(pipe)
    else:
        import anyio

        anyio.run(replica.serve_async, pipe, backend=spec["runtime"])


class Replica:
    def __init__(self, spec: dict[str, Any], senders: set[str]) -> None:
        self.spec = spec
        self.senders = senders
        self.store = RedisStore.from_url(
            spec["redis"], namespace=spec["namespace"], **spec["store_options"]
        )
        self.clock = FakeClock(1000.0)
        config = CircuitBreakerConfig(**spec["config"])
        self.registry = BreakerRegistry(
            default=config,
            policies={k: config.replace(**v) for k, v in spec["policies"].items()},
            clock=self.clock,
            store=self.store,
        )
        self.changes: list[tuple[float, str, str, str, str | None]] = []
        self.registry.add_listener(self._heard)
        self.upstream = spec["upstream"]

    def _heard(self, event: BreakerEvent) -> None:
        if event.kind == "state_change" and event.old_state and event.new_state:
            self.changes.append(
                (time.monotonic(), event.name, event.old_state.value, event.new_state.value,
                 event.cause)
            )  # fmt: skip

    def ready(self) -> bool:
        deadline = time.monotonic() + 10
        while not self.store.connected and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.store.connected

    def breaker_state(self, key: str | None) -> str | None:
        breaker = self.registry.get(key or self.default_key)
        return None if breaker is None else breaker.state.value

    @property
    def default_key(self) -> str:
        return self.upstream.split("//", 1)[1]

    def _request(self, path: str, key: str | None) -> httpx.Request:
        extensions = {"circuit_breaker": {"key": key}} if key else {}
        return httpx.Request("GET", f"{self.upstream}{path}", extensions=extensions)

    def answer(self, command: tuple[Any, ...]) -> Any:
        """The commands that need no I/O."""
        kind = command[0]
        if kind == "advance":
            self.clock.advance(command[1])
            return "ok"
        if kind == "report":
            return {
                "state": self.breaker_state(command[1]),
                "changes": list(self.changes),
                "senders": sorted(self.senders),
                "health": self.store.health.state,
            }
        raise ValueError(command)

    # -- sync ------------------------------------------------------------------------

    def serve_sync(self, pipe: Connection) -> None:
        client = httpx.Client(transport=CircuitBreakerTransport(registry=self.registry), timeout=60)
        pipe.send("ready" if self.ready() else "not connected")
        while True:
            command = pipe.recv()
            kind = command[0]
            if kind == "stop":
                client.close()
                self.store.close()
                pipe.send("bye")
                return
            if kind == "send":
                _, path, n, key = command
                pipe.send([self._send_sync(client, path, key) for _ in range(n)])
            elif kind in ("until", "hang"):
                pipe.send(self._loop_sync(client, command))
            else:
                pipe.send(self.answer(command))

    def _send_sync(self, client: httpx.Client, path: str, key: str | None) -> Outcome:
        admitted = time.monotonic()
        try:
            response = client.send(self._request(path, key))
        except CircuitOpenError as exc:
            return (admitted, "refused", exc.state.value, None, time.monotonic() - admitted)
        except httpx.HTTPError as exc:
            return (admitted, "error", type(exc).__name__, None, time.monotonic() - admitted)
        state = response.extensions["circuit_breaker"]["state"]
        took = time.monotonic() - admitted
        return (admitted, "response", response.status_code, state.value, took)

    def _loop_sync(self, client: httpx.Client, command: tuple[Any, ...]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if command[0] == "hang":
            _, path, key = command
            while True:  # refused until a lease is there; then the probe hangs
                outcome = self._send_sync(client, path, key)
                if outcome[1] != "refused":
                    return [outcome]
                time.sleep(0.01)
        _, path, state, key, seconds = command
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            outcomes.append(self._send_sync(client, path, key))
            if self.breaker_state(key) == state:
                break
            time.sleep(0.01)
        return outcomes

    # -- asyncio and trio ------------------------------------------------------------------

    async def serve_async(self, pipe: Connection) -> None:
        import anyio

        transport = AsyncCircuitBreakerTransport(registry=self.registry)
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            ready = await anyio.to_thread.run_sync(self.ready)
            pipe.send("ready" if ready else "not connected")
            while True:
                command = await anyio.to_thread.run_sync(pipe.recv)
                kind = command[0]
                if kind == "stop":
                    break
                if kind == "send":
                    _, path, n, key = command
                    pipe.send([await self._send_async(client, path, key) for _ in range(n)])
                elif kind == "until":
                    _, path, state, key, seconds = command
                    outcomes = []
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        outcomes.append(await self._send_async(client, path, key))
                        if self.breaker_state(key) == state:
                            break
                        await anyio.sleep(0.01)
                    pipe.send(outcomes)
                else:
                    pipe.send(self.answer(command))
        self.store.close()
        pipe.send("bye")

    async def _send_async(self, client: httpx.AsyncClient, path: str, key: str | None) -> Outcome:
        admitted = time.monotonic()
        try:
            response = await client.send(self._request(path, key))
        except CircuitOpenError as exc:
            return (admitted, "refused", exc.state.value, None, time.monotonic() - admitted)
        except httpx.HTTPError as exc:
            return (admitted, "error", type(exc).__name__, None, time.monotonic() - admitted)
        state = response.extensions["circuit_breaker"]["state"]
        took = time.monotonic() - admitted
        return (admitted, "response", response.status_code, state.value, took)
