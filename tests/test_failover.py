"""SDK failover (issue 15): `Client` and `AsyncClient` over several addresses move to
the next one when a server stops, retrying what it refused or left unanswered,
within a bounded budget, counted in `client.retries`; `retries=0` turns it off."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ringserve.client import AsyncClient, Client, Unavailable
from ringserve.client.errors import ConnectionClosed, InvalidArgument
from ringserve.client.retry import RetryPolicy, addresses_of, retryable
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml

X = np.ones((1, 16), np.float32)


def test_retry_policy_is_bounded_and_jittered() -> None:
    p = RetryPolicy(retries=3, retry_timeout=30.0, backoff=0.1, max_backoff=0.4)
    started = time.monotonic()
    assert [p.allows(n, started) for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert not p.allows(1, started - 31.0)  # the time budget
    assert not RetryPolicy(retries=0).allows(1, started)
    waits = [p.delay(3, ConnectionClosed("x")) for _ in range(200)]
    assert all(0.0 <= w <= 0.4 for w in waits) and len(set(waits)) > 100  # capped, jittered
    assert p.delay(1, Unavailable("UNAVAILABLE: server is stopping: retry on another server")) == 0
    assert retryable(ConnectionClosed("x")) and retryable(ConnectionResetError())
    assert not retryable(InvalidArgument("x")) and not retryable(TimeoutError())
    assert addresses_of("tcp://a:1, unix:///b") == ["tcp://a:1", "unix:///b"]
    with pytest.raises(ValueError):
        addresses_of([])


def test_clients_fail_over_when_a_server_stops(model_root: Path) -> None:
    toml = models_toml(model_root, ["linear"])
    a = ServerProcess(toml, "ring_bytes = 1048576", wait_ready=False).start()
    b = ServerProcess(toml, "ring_bytes = 1048576", wait_ready=False).start()
    try:
        a.wait_ready()
        b.wait_ready()
        sync_ok = 0
        errors: list[BaseException] = []
        stop = threading.Event()
        client = Client([a.tcp_url, b.unix_url], timeout=30)

        def sync_load() -> None:
            nonlocal sync_ok
            while not stop.is_set():
                try:
                    assert client.infer("linear", {"x": X})["y"].shape == (1, 4)
                    sync_ok += 1
                except Exception as exc:
                    errors.append(exc)

        async def async_load() -> tuple[int, int, str]:
            ok = 0
            async with AsyncClient([a.unix_url, b.tcp_url]) as ac:
                assert ac.address == a.unix_url  # the first address first

                async def one() -> None:
                    nonlocal ok
                    while not stop.is_set():
                        out = await ac.infer("linear", {"x": X})
                        assert out["y"].shape == (1, 4)
                        ok += 1

                await asyncio.gather(*(one() for _ in range(8)))
                return ok, ac.retries, ac.address

        thread = threading.Thread(target=sync_load, daemon=True)
        thread.start()
        result: list[tuple[int, int, str]] = []
        runner = threading.Thread(target=lambda: result.append(asyncio.run(async_load())))
        runner.start()
        deadline = time.monotonic() + 60
        while sync_ok < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.address == a.tcp_url
        assert a.stop(signal.SIGTERM) == 0  # both clients are on a
        before = sync_ok
        while sync_ok < before + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join(30)
        runner.join(30)
        assert not errors, errors[:3]
        assert sync_ok >= before + 50
        assert client.retries >= 1 and client.address == b.unix_url
        (async_ok, async_retries, async_address) = result[0]
        assert async_ok > 0 and async_retries >= 1 and async_address == b.tcp_url
        client.close()

        # Retries off: the failure reaches the caller, and nothing is counted.
        bare = Client(b.tcp_url, retries=0)
        bare.infer("linear", {"x": X})
        assert b.stop(signal.SIGTERM) == 0
        with pytest.raises(Unavailable):  # a ConnectionClosed or "stopping"
            bare.infer("linear", {"x": X})
        assert bare.retries == 0
        bare.close()
    finally:
        for srv in (a, b):
            srv.stop()
            if srv._tmp is not None:
                srv._tmp.cleanup()
