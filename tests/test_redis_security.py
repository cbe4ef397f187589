"""What reaches Redis, and where the store's credentials never go.

Nothing from a breaker key (a host, or a custom key that may hold anything) appears in
a Redis key, a hash, a message or any command the server receives: every command is
read off the server with its own ``MONITOR``. The password of the store's URL never
appears in its logs, errors, `repr`, health or metrics.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from httpx_breaker import CircuitBreakerConfig
from httpx_breaker._store import ProbeOutcome
from httpx_breaker.redis import RedisStore

from .fleet_member import CLOSED, OPEN, Member
from .redis_servers import KINDS, Server, running, wait_until

CONFIG = CircuitBreakerConfig(reset_timeout=30.0, half_open_max_requests=1)
# Keys as a custom `key=` function could make them: a host with a port, and keys that
# carry what must never leave the process.
SECRET_KEYS = (
    "payments-secret-host.internal:8443",
    "tenant-7f3a9c/api-token-QWxhZGRpbjpvcGVu",
    "user:hunter2@db.private",
)
NEEDLES = ("payments-secret-host", "QWxhZGRpbjpvcGVu", "hunter2", "db.private", "tenant-7f3a9c")
PASSWORD = "pw-S3cr3t-9f8e7d"


class Monitor:
    """Every command the server receives, as its own CLI's MONITOR prints them."""

    def __init__(self, server: Server, path: Path) -> None:
        cli = server.binary.with_name("valkey-cli" if server.kind == "valkey" else "redis-cli")
        args = [str(cli), "-h", "127.0.0.1", "-p", str(server.port)]
        if server.password:
            args += ["--no-auth-warning", "-a", server.password]
        self.path = path
        self._out = path.open("wb")
        self.process = subprocess.Popen([*args, "monitor"], stdout=self._out)
        with server.client() as client:  # wait until MONITOR sees commands
            marker = f"monitor-ready-{time.monotonic_ns()}"
            wait_until(lambda: client.echo(marker) and marker in self.text(), what="MONITOR")

    def text(self) -> str:
        self._out.flush()
        return self.path.read_text(errors="replace")

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._out.close()
        return self.path.read_text(errors="replace")


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with running(request.param) as started:
        yield started


def _everything_stored(server: Server) -> str:
    with server.client() as client:
        parts = []
        for key in client.keys("*"):
            parts.append(key)
            if client.type(key) == "hash":
                parts.extend(f"{f}={v}" for f, v in client.hgetall(key).items())
        return "\n".join(parts)


def test_breaker_keys_never_reach_redis(server: Server, tmp_path: Path) -> None:
    """Keys, hashes, messages and every command hold digests, never the breaker key."""
    monitor = Monitor(server, tmp_path / "monitor.log")
    messages: list[str] = []
    with server.client() as client:
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        pubsub.psubscribe("*")
        stores = [
            RedisStore.from_url(server.url, namespace="checkout", share_counts=True)
            for _ in range(2)
        ]
        try:
            for key in SECRET_KEYS:
                here, there = Member(CONFIG), Member(CONFIG)
                here.link = stores[0].attach(key, here, CONFIG)
                there.link = stores[1].attach(key, there, CONFIG)
                wait_until(lambda: all(s.connected for s in stores), what="connections")
                here.link.counted(True)  # share_counts sends outcomes too
                here.trip(retry_after=40.0)
                wait_until(lambda t=there: t.state is OPEN, what="the open")  # type: ignore[misc]
                redis_key = [k for k in client.keys("*:k:*") if client.hget(k, "s") == "o"]
                for k in redis_key:
                    client.hset(k, "u", 1)
                here.half_open()
                here.link.take_lease()
                wait_until(lambda h=here: bool(h.link.leases), what="a lease")  # type: ignore[misc,union-attr]
                lease = here.link.take_lease()
                assert lease is not None
                here.link.probe_done(lease, ProbeOutcome.SUCCESS)
                wait_until(lambda t=there: t.state is CLOSED, what="the close")  # type: ignore[misc]
            stored = _everything_stored(server)
            while (message := pubsub.get_message(timeout=0.2)) is not None:
                messages.append(str(message.get("data")))
        finally:
            for store in stores:
                store.close()
            pubsub.close()
    commands = monitor.stop()
    assert "EVALSHA" in commands.upper() or "EVAL" in commands.upper()
    assert len([m for m in messages if m.startswith("1|")]) >= 6
    for needle in NEEDLES:
        assert needle not in commands
        assert needle not in stored
        assert not any(needle in message for message in messages)


@pytest.fixture
def guarded() -> Iterator[Server]:
    with running(KINDS[0], password=PASSWORD) as started:
        yield started


def _no_password_in(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert "S3cr3t" not in text


def test_the_password_stays_out_of_logs_repr_health_and_metrics(
    guarded: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Connected, lost, back again: the password shows up nowhere the store writes."""
    caplog.set_level(logging.DEBUG)
    store = RedisStore.from_url(guarded.url, namespace="checkout", timeout=0.2)
    try:
        assert PASSWORD in guarded.url
        member = Member(CONFIG)
        member.link = store.attach("api.example.com", member, CONFIG)
        wait_until(lambda: store.connected, what="the connection")
        guarded.stop()
        wait_until(lambda: not store.connected, what="the loss")
        guarded.start()
        wait_until(lambda: store.connected, what="the reconnection")
        _no_password_in(
            repr(store), str(store.health), repr(store.metrics()), caplog.text,
            *(str(r.__dict__) for r in caplog.records),
        )  # fmt: skip
        assert "***@127.0.0.1" in repr(store)
        assert "lost" in caplog.text and "is back" in caplog.text
    finally:
        store.close()


def test_a_wrong_password_is_reported_without_it(
    guarded: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Authentication fails; the store says so, and never says the password it tried."""
    caplog.set_level(logging.DEBUG)
    wrong = guarded.url.replace(PASSWORD, "wrong-S3cr3t-pw")
    store = RedisStore.from_url(wrong, namespace="checkout", timeout=0.2)
    try:
        wait_until(lambda: store.health.state == "disconnected", what="the failure")
        error = store.health.last_error or ""
        assert "Authentication" in error or "WRONGPASS" in error or "invalid" in error
        for text in (error, caplog.text, repr(store), str(store.health)):
            assert "wrong-S3cr3t-pw" not in text
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{PASSWORD}@127.0.0.1:6379/0",
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        f"redis://admin:{PASSWORD}@/0",
        f"redis://:{PASSWORD}@127.0.0.1:6379/db",
    ],
)
def test_errors_about_a_bad_url_leave_the_password_out(url: str) -> None:
    """A ValueError names what is wrong with the URL, not the password in it."""
    with pytest.raises(ValueError) as caught:
        RedisStore.from_url(url, namespace="checkout")
    _no_password_in(str(caught.value), repr(caught.value))
    assert "***@" in str(caught.value)


def test_a_percent_encoded_password_is_hidden_in_both_spellings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """p%40ss and p@ss are the same password: neither is ever shown."""
    caplog.set_level(logging.DEBUG)
    store = RedisStore.from_url(
        "redis://:S3cr3t%40pw@127.0.0.1:1/0", namespace="checkout", timeout=0.2
    )
    try:
        wait_until(lambda: store.health.state == "disconnected", what="the failure")
        for text in (repr(store), str(store.health), caplog.text):
            assert "S3cr3t" not in text
    finally:
        store.close()
