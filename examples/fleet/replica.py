"""One replica of a service: a transport whose breakers share their state through Redis.

Every replica of a service builds the same thing: one `RedisStore` per process, handed
to its transports (or to a `BreakerRegistry`), and closed at the end::

    store = RedisStore.from_url(redis_url, namespace="example-fleet")
    transport = CircuitBreakerTransport(default=CONFIG, store=store)

Here the traffic is driven from stdin, one command per line, so that `run.py` can show
two replicas side by side in a fixed order (a real service sends its own requests):

- ``send N``: N requests to the upstream, one line each;
- ``wait STATE``: wait until this replica's breaker for the upstream reads STATE;
- ``until-closed``: a request every 50 ms until the breaker is CLOSED again;
- ``quit``.

After each command it prints the state changes its breaker made meanwhile (and their
cause: ``fleet`` for one another replica made), then ``done``. Run by hand::

    python examples/fleet/replica.py --redis redis://127.0.0.1:6379/0 \
        --upstream http://127.0.0.1:8000 --name A
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time

import httpx

from httpx_breaker import (
    BreakerRegistry,
    CircuitBreakerConfig,
    CircuitBreakerTransport,
    CircuitOpenError,
)
from httpx_breaker.events import BreakerEvent
from httpx_breaker.redis import RedisStore

CONFIG = CircuitBreakerConfig(failure_threshold=3, reset_timeout=1.0, half_open_max_requests=1)


def send(client: httpx.Client, url: str) -> str:
    """One request; what came of it."""
    try:
        return f"HTTP {client.get(url).status_code}"
    except CircuitOpenError as exc:  # refused: the request never left the process
        retry_after = None if exc.retry_after is None else round(exc.retry_after, 1)
        return f"refused before any I/O ({exc.state.name}, retry_after={retry_after})"


def main() -> None:
    parser = argparse.ArgumentParser(description="one replica of a fleet")
    parser.add_argument("--redis", required=True, help="redis:// or valkey:// URL")
    parser.add_argument("--upstream", required=True, help="the host every replica calls")
    parser.add_argument("--name", required=True, help="this replica's name in the output")
    args = parser.parse_args()
    name = args.name

    store = RedisStore.from_url(args.redis, namespace="example-fleet")
    registry = BreakerRegistry(default=CONFIG, store=store)
    changes: list[str] = []
    lock = threading.Lock()

    def heard(event: BreakerEvent) -> None:  # called on the store's thread for the fleet's
        if event.kind == "state_change" and event.old_state and event.new_state:
            with lock:
                changes.append(
                    f"{name}: breaker {event.old_state.name} -> {event.new_state.name} "
                    f"({event.cause})"
                )

    registry.add_listener(heard)
    url = f"{args.upstream}/from-{name.lower()}"
    key = url.split("//", 1)[1].split("/", 1)[0]

    def say(line: str) -> None:
        print(line, flush=True)

    def flush_changes() -> None:
        with lock:
            for line in changes:
                say(line)
            changes.clear()

    deadline = time.monotonic() + 10
    while not store.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    with httpx.Client(transport=CircuitBreakerTransport(registry=registry)) as client:
        client.get(f"{args.upstream}/ok")  # the breaker exists, and hears the fleet
        say(f"{name}: ready ({store.health.state})")
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "send":
                for _ in range(int(arg)):
                    say(f"{name}: {send(client, url)}")
            elif command == "wait":
                while registry[key].state.name != arg:
                    time.sleep(0.005)
            elif command == "until-closed":
                while registry[key].state.name != "CLOSED":
                    # Refused while this replica holds no probe lease: the fleet's
                    # budget is one probe per round, for all replicas together.
                    with contextlib.suppress(CircuitOpenError):
                        client.get(url)
                    time.sleep(0.05)
            flush_changes()
            say("done")
            if command == "quit":
                break
    store.close()


if __name__ == "__main__":
    main()
