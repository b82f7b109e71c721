"""Client regions under attack: truncated under the server, owned by someone else,
odd names, and the per-connection limits. One server with small limits for the module;
every test checks the server still serves another client afterwards."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import posix_ipc
import pytest

from ringserve.client import Client, SharedRegion
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml
from faults import wait_for

LIMITS = "max_regions_per_connection = 3\nmax_region_bytes_per_connection = 4194304"


@pytest.fixture(scope="module")
def srv(model_root: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(models_toml(model_root, ["linear"]), LIMITS)
    s.start()
    yield s
    assert s.stop() == 0


@pytest.fixture
def region() -> Iterator[SharedRegion]:
    r = SharedRegion.create("buf", 1 << 20)
    yield r
    r.close()
    r.unlink()


def truncate(key: str, size: int) -> None:
    shm = posix_ipc.SharedMemory(key)
    try:
        os.ftruncate(shm.fd, size)
    finally:
        shm.close_fd()


class Bystander:
    """Another client infering steadily while the test attacks: every reply must be
    right, and some must arrive after the attack."""

    def __init__(self, srv: ServerProcess) -> None:
        self.c = Client(srv.unix_url, timeout=30.0)
        self.x = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
        self.want = self.c.infer("linear", {"x": self.x})["y"]
        self.stop = threading.Event()
        self.served = 0
        self.errors: list[BaseException] = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                np.testing.assert_array_equal(self.c.infer("linear", {"x": self.x})["y"], self.want)
                self.served += 1
        except BaseException as exc:  # reported by finish()
            self.errors.append(exc)

    def finish(self) -> None:
        seen = self.served
        deadline = threading.Event()
        for _ in range(500):  # then at least two more replies, so it outlived the attack
            if self.served >= seen + 2 or self.errors:
                break
            deadline.wait(0.01)
        self.stop.set()
        self.t.join(30)
        self.c.close()
        assert not self.errors, self.errors
        assert self.served >= seen + 2, "the other client was not served after the attack"


def infer_raw(c: Client, **msg: object) -> dict:
    return c.recv(c.send({"op": "infer", "model": "linear", **msg}))


def test_truncated_input_region_is_an_error_not_a_crash(
    srv: ServerProcess, region: SharedRegion
) -> None:
    other = Bystander(srv)
    with Client(srv.unix_url) as c:
        c.shm_register(region)
        x = region.array((4, 16), "float32", offset=8192)
        x[:] = 1.0
        truncate(region.key, 4096)  # the client shrinks its own region under the server
        t = {"dtype": "float32", "shape": [4, 16], "shm": region.ref(8192, 256)}
        r = infer_raw(c, inputs={"x": t})
        assert r["error"]["code"] == "FAILED_PRECONDITION", r
        msg = r["error"]["message"]
        for part in ("inputs.x.shm", "'buf'", "256 bytes", "offset 8192", "now holds 4096"):
            assert part in msg, msg
        # Still registered, and the part below the new end still works.
        ok = infer_raw(c, inputs={"x": {**t, "shm": region.ref(0, 256)}})
        assert ok["ok"], ok
    other.finish()


def test_truncated_output_region_is_an_error_not_a_crash(
    srv: ServerProcess, region: SharedRegion
) -> None:
    other = Bystander(srv)
    with Client(srv.unix_url) as c:
        c.shm_register(region)
        truncate(region.key, 0)
        x = np.ones((2, 16), np.float32)
        r = infer_raw(
            c,
            inputs={"x": {"dtype": "float32", "shape": [2, 16], "data": x.tobytes()}},
            output_shm={"y": region.ref(65536, 32)},
        )
        assert r["error"]["code"] == "FAILED_PRECONDITION", r
        msg = r["error"]["message"]
        for part in ("output_shm.y", "'buf'", "32 bytes", "offset 65536", "now holds 0"):
            assert part in msg, msg
        # The server did not grow the client's object back by writing past its end.
        shm = posix_ipc.SharedMemory(region.key)
        assert os.fstat(shm.fd).st_size == 0
        shm.close_fd()
    other.finish()


def test_region_owned_by_another_uid_is_refused(srv: ServerProcess) -> None:
    """The confused deputy: the server must not open, with its own rights, an object
    the connecting process does not own."""
    if os.getuid() != 0:
        pytest.fail("this test chowns a /dev/shm object to another uid: run it as root (CI does)")
    key = f"/ringserve-test-foreign-{os.getpid()}"
    shm = posix_ipc.SharedMemory(key, posix_ipc.O_CREX, mode=0o600, size=4096)
    try:
        os.fchown(shm.fd, 65534, 65534)
        with Client(srv.unix_url) as c:
            r = c.recv(c.send({"op": "shm_register", "name": "f", "key": key, "size": 4096}))
            assert r["error"]["code"] == "FAILED_PRECONDITION", r
            assert "owned by uid 65534" in r["error"]["message"]
            assert "uid 0" in r["error"]["message"]
    finally:
        shm.close_fd()
        shm.unlink()


def test_keys_that_are_not_plain_shm_names(srv: ServerProcess) -> None:
    fifo = f"/dev/shm/ringserve-test-fifo-{os.getpid()}"
    os.mkfifo(fifo, 0o600)
    try:
        with Client(srv.unix_url, timeout=10) as c:
            for key in ("/../etc/passwd", "/a/b", "/", "/..", "x" * 300):
                r = c.recv(c.send({"op": "shm_register", "name": "k", "key": key, "size": 1}))
                assert r["error"]["code"] == "INVALID_ARGUMENT", (key, r)
                assert "field 'key'" in r["error"]["message"]
                assert len(r["error"]["message"]) < 400
            # A FIFO in /dev/shm: refused at once (opened non-blocking), never waited on.
            key = os.path.basename(fifo)
            r = c.recv(c.send({"op": "shm_register", "name": "k", "key": key, "size": 1}))
            assert r["error"]["code"] == "FAILED_PRECONDITION", r
            assert c.health()["live"]
    finally:
        os.unlink(fifo)


def test_per_connection_limits(srv: ServerProcess) -> None:
    regions = [SharedRegion.create(f"r{i}", 1 << 20) for i in range(4)]
    big = SharedRegion.create("big", 4 << 20)
    try:
        with Client(srv.unix_url) as c:
            for r in regions[:3]:
                c.shm_register(r)
            reply = c.recv(
                c.send({"op": "shm_register", "name": "r3", "key": regions[3].key, "size": 1024})
            )
            assert reply["error"]["code"] == "RESOURCE_EXHAUSTED"
            assert "max_regions_per_connection (3)" in reply["error"]["message"]
            c.shm_unregister(regions[0])
            reply = c.recv(
                c.send({"op": "shm_register", "name": "big", "key": big.key, "size": 4 << 20})
            )
            assert reply["error"]["code"] == "RESOURCE_EXHAUSTED"
            assert "max_region_bytes_per_connection (4194304)" in reply["error"]["message"]
            c.shm_register(regions[3])  # within both limits again
            # The limits are per connection: another one starts from zero.
            with Client(srv.unix_url) as c2:
                c2.shm_register(big)
                c2.shm_unregister(big)
    finally:
        for r in [*regions, big]:
            r.close()
            r.unlink()


def test_unregister_while_queued_keeps_the_fd_until_answered(
    srv: ServerProcess, region: SharedRegion
) -> None:
    """Unregistering a region that pipelined requests still name: they are answered
    from the region (the fd stays open under them), and fds do not leak after."""
    pid = srv.proc.pid  # type: ignore[union-attr]

    def fds() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    with Client(srv.unix_url) as c:
        before = fds()
        c.shm_register(region)
        x = region.array((2, 16), "float32", offset=0)
        x[:] = 2.0
        t = {"dtype": "float32", "shape": [2, 16], "shm": region.ref(0, 128)}
        ids = [c.send({"op": "infer", "model": "linear", "inputs": {"x": t}}) for _ in range(20)]
        c.send({"op": "shm_unregister", "name": "buf"})
        replies = [c.recv() for _ in range(21)]
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]]
        assert {r["id"] for r in replies} >= set(ids)
        # The region's fd closes with the last request that named it.
        wait_for(lambda: fds() <= before, 10.0, f"the server's fds back to {before}")
