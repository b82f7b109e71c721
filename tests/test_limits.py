"""Each input limit against a running server, done for real (issue 11): the headers are
sent, the connections opened, the shapes sent. Hitting a limit answers its documented
code or closes that connection with a log line naming it; a second, well-behaved client
keeps being served throughout."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import fuzzing
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ringserve.client import Client, Unauthenticated
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml
from rawclient import Raw

TOKEN = "s3cret-token-for-tests"
X = {"dtype": "float32", "shape": [1, 16], "data": bytes(64)}
MAX_CONNECTIONS = 40
MAX_FRAME = 256 * 1024 * 1024


class Limited(ServerProcess):
    """A server with small, quick limits and a token; its log goes to a file."""

    def __init__(self, root: Path, tmp: Path) -> None:
        (tmp / "token").write_text(TOKEN + "\n")
        self.log_path = tmp / "server.log"
        self._log = open(self.log_path, "wb")  # closed in stop()
        super().__init__(
            models_toml(root, ["linear"]),
            f"""
            auth_token_file = "{tmp / "token"}"
            max_frame_bytes = {MAX_FRAME}
            max_frame_bytes_before_auth = 512
            max_connections = {MAX_CONNECTIONS}
            handshake_timeout_seconds = 1.0
            frame_timeout_seconds = 2.0
            """,
            stderr=self._log,
        )

    def stop(self, *args: object, **kw: object) -> int:
        code = super().stop(*args, **kw)  # type: ignore[arg-type]
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, within: float = 10.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the server log:\n{self.log()[-3000:]}")

    def rss(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def srv(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    s = Limited(model_root, tmp_path_factory.mktemp("limits"))
    s.start()
    yield s
    assert s.stop() == 0


def authed(srv: Limited) -> Raw:
    raw = Raw(srv.tcp_url)
    raw.send({"id": 0, "op": "auth", "token": TOKEN})
    assert raw.recv()["ok"] is True
    return raw


def served(c: Client) -> None:
    """The well-behaved client: a real inference, answered correctly."""
    out = c.infer("linear", {"x": np.ones((1, 16), np.float32)})
    assert out["y"].shape == (1, 4)


@pytest.fixture()
def good(srv: Limited) -> Iterator[Client]:
    with Client(srv.unix_url) as c:
        served(c)
        yield c
        served(c)  # and still, after the misbehaving client


def err(reply: dict, code: str, *words: str) -> str:
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    for w in words:
        assert w in reply["error"]["message"], reply
    return str(reply["error"]["message"])


# ---- auth -------------------------------------------------------------------------------


def test_auth_right_token_then_served(srv: Limited) -> None:
    with authed(srv) as raw:
        raw.send({"id": 1, "op": "infer", "model": "linear", "inputs": {"x": X}})
        assert raw.recv()["ok"] is True
    with Client(srv.tcp_url, token=TOKEN) as c:
        served(c)


def test_auth_wrong_token_is_refused_and_closed(srv: Limited, good: Client) -> None:
    with Raw(srv.tcp_url) as raw:
        raw.send({"id": 1, "op": "auth", "token": "wrong"})
        err(raw.recv(), "UNAUTHENTICATED", "token")
        assert raw.closed_by_peer()
    with pytest.raises(Unauthenticated):
        Client(srv.tcp_url, token="wrong").health()


def test_no_auth_first_is_refused_and_closed(srv: Limited, good: Client) -> None:
    with Raw(srv.tcp_url) as raw:
        raw.send({"id": 5, "op": "health"})
        r = raw.recv()
        assert r["id"] == 5
        err(r, "UNAUTHENTICATED", "'auth' first")
        assert raw.closed_by_peer()


@pytest.mark.parametrize(
    "body", [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"op": "auth", "token": TOKEN})]
)
def test_garbage_before_auth_is_refused_and_closed(srv: Limited, good: Client, body: bytes) -> None:
    """Not even a valid envelope: without this, invalid frames would hold the
    connection open without ever authenticating."""
    with Raw(srv.tcp_url) as raw:
        raw.send_bytes(struct.pack(">I", len(body)) + body)
        err(raw.recv(), "UNAUTHENTICATED", "'auth' first")
        assert raw.closed_by_peer()


def test_unix_needs_no_auth_and_accepts_the_right_one(srv: Limited) -> None:
    with Raw(srv.unix_url) as raw:
        raw.send({"id": 1, "op": "health"})
        assert raw.recv()["ok"] is True
        raw.send({"id": 2, "op": "auth", "token": TOKEN})
        assert raw.recv()["ok"] is True
        raw.send({"id": 3, "op": "infer", "model": "linear", "inputs": {"x": X}})
        assert raw.recv()["ok"] is True


def test_large_frame_pipelined_behind_auth_is_read_with_the_full_limit(srv: Limited) -> None:
    big = {"id": 2, "op": "infer", "model": "linear", "inputs": {"x": X}, "pad": bytes(100_000)}
    auth = msgpack.packb({"id": 1, "op": "auth", "token": TOKEN})
    body = msgpack.packb(big)
    with Raw(srv.tcp_url) as raw:
        raw.send_bytes(struct.pack(">I", len(auth)) + auth + struct.pack(">I", len(body)) + body)
        assert raw.recv()["ok"] is True
        assert raw.recv()["id"] == 2  # answered (the extra field is ignored), not refused


# ---- memory for bytes announced ---------------------------------------------------------


def test_large_frame_before_auth_is_refused_from_the_header(srv: Limited, good: Client) -> None:
    with Raw(srv.tcp_url) as raw:
        raw.send_bytes(struct.pack(">I", MAX_FRAME - 1))
        r = raw.recv()
        assert r["id"] is None
        err(r, "UNAUTHENTICATED", "max_frame_bytes_before_auth", "512")
        assert raw.closed_by_peer()
    srv.wait_log("limit server.max_frame_bytes_before_auth")


def test_announced_bytes_are_not_committed(srv: Limited, good: Client) -> None:
    """32 authenticated connections each announce a frame just under max_frame_bytes and
    send 1 KiB of it: the server grows by what arrived, not by 32 x 256 MiB."""
    conns = [authed(srv) for _ in range(32)]
    try:
        before = srv.rss()
        for raw in conns:
            raw.send_bytes(struct.pack(">I", MAX_FRAME - 1) + os.urandom(1024))
        peak = before
        deadline = time.monotonic() + 1.5  # 32 x 256 MiB would show within milliseconds
        while time.monotonic() < deadline:
            served(good)
            peak = max(peak, srv.rss())
        assert peak - before < 64 * 1024 * 1024, (before, peak)
    finally:
        for raw in conns:
            raw.close()


def test_open_connections_commit_only_what_they_read(srv: Limited, good: Client) -> None:
    """Each served connection reads into a 256 KiB buffer: an anonymous mapping whose
    pages are committed as frames touch them and given back whole at the close. As a
    bytearray it was zero-filled at once (30 connections: 7.5 MiB) and, once glibc's
    adaptive mmap threshold had risen past it, taken from the heap, where connections
    that came and went left holes the heap could not give back."""

    def anon() -> int:
        assert srv.proc is not None
        status = Path(f"/proc/{srv.proc.pid}/status").read_text()
        return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("RssAnon:"))

    before = anon()
    conns = [Raw(srv.unix_url) for _ in range(30)]
    try:
        for raw in conns:
            raw.send({"id": 1, "op": "health"})
            assert raw.recv()["ok"] is True
        grown = anon() - before
        assert grown < 3 * 1024, f"30 open connections grew RssAnon by {grown} KiB"
    finally:
        for raw in conns:
            raw.close()


def test_oversize_frame_after_auth(srv: Limited, good: Client) -> None:
    with authed(srv) as raw:
        raw.send_bytes(struct.pack(">I", MAX_FRAME + 1))
        r = raw.recv()
        assert r["id"] is None
        err(r, "RESOURCE_EXHAUSTED", "max_frame_bytes", str(MAX_FRAME))
        assert raw.closed_by_peer()


# ---- connections, slowloris -------------------------------------------------------------


def test_max_connections_per_listener(srv: Limited, good: Client) -> None:
    conns: list[Raw] = []
    try:
        # The fixture's own clients may hold TCP places; fill what is left.
        while True:
            raw = Raw(srv.tcp_url)
            raw.send({"id": 0, "op": "auth", "token": TOKEN})
            r = raw.recv()
            if not r["ok"]:
                break
            conns.append(raw)
            assert len(conns) <= MAX_CONNECTIONS
        assert len(conns) >= MAX_CONNECTIONS - 2
        assert r["id"] is None
        err(r, "RESOURCE_EXHAUSTED", "max_connections", str(MAX_CONNECTIONS), "tcp")
        assert raw.closed_by_peer()
        raw.close()
        srv.wait_log("limit server.max_connections")
        assert good.stats()["limits"]["max_connections"] >= 1
        served(good)  # the Unix listener has its own places
        with Client(srv.unix_url) as other:
            served(other)
        conns.pop().close()  # a place frees up once the server sees the close
        deadline = time.monotonic() + 10
        while True:
            with Raw(srv.tcp_url) as raw:
                raw.send({"id": 0, "op": "auth", "token": TOKEN})
                if raw.recv()["ok"]:
                    break
            assert time.monotonic() < deadline, "no TCP place freed after a close"
            time.sleep(0.05)
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("sent", [b"", b"\x00\x00", struct.pack(">I", 100) + b"abc"])
def test_no_complete_first_frame_is_closed(srv: Limited, good: Client, sent: bytes) -> None:
    for url in (srv.tcp_url, srv.unix_url):
        with Raw(url) as raw:
            raw.send_bytes(sent)
            t0 = time.monotonic()
            r = raw.recv()  # the server's goodbye, then EOF
            err(r, "DEADLINE_EXCEEDED", "handshake_timeout_seconds")
            assert raw.closed_by_peer()
            assert 0.9 < time.monotonic() - t0 < 5.0
    srv.wait_log("limit server.handshake_timeout_seconds")


def test_dribbled_frame_is_closed(srv: Limited, good: Client) -> None:
    """One byte at a time, forever: the frame must end within frame_timeout_seconds."""
    with authed(srv) as raw:
        raw.send_bytes(struct.pack(">I", 1000))
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 8.0:
            try:
                raw.send_bytes(b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            served(good)
            raw.sock.settimeout(0.2)
            try:
                data = raw.sock.recv(65536)
            except TimeoutError:
                continue
            raw.pending += [msgpack.unpackb(b) for b in raw.dec.feed(data)]
            if not data or raw.pending:
                closed = True
                break
        assert closed, "a frame dribbled for 8 s was not cut off"
        assert 1.9 < time.monotonic() - t0 < 6.0
    srv.wait_log("limit server.frame_timeout_seconds")


# ---- what one request may make the server compute or echo ------------------------------


def test_rank_150000_is_refused_fast(srv: Limited, good: Client) -> None:
    shape = [1] * 150_000  # a 150 KB frame; [1000] * 150000 made 14 s of products
    t = {"dtype": "float32", "shape": [1000] * 150_000, "data": b""}
    with authed(srv) as raw:
        t0 = time.monotonic()
        raw.send({"id": 1, "op": "infer", "model": "linear", "inputs": {"x": t}})
        served(good)
        msg = err(raw.recv(), "INVALID_ARGUMENT", "inputs.x.shape", "rank at most 32", "150000")
        assert time.monotonic() - t0 < 2.0 and len(msg) < 400
        t["shape"] = shape[:33]
        raw.send({"id": 2, "op": "infer", "model": "linear", "inputs": {"x": t}})
        err(raw.recv(), "INVALID_ARGUMENT", "rank at most 32", "rank 33")
        t["shape"] = [1] * 32
        raw.send({"id": 3, "op": "infer", "model": "linear", "inputs": {"x": t}})
        msg = err(raw.recv(), "INVALID_ARGUMENT")  # wrong size / shape, but not the rank
        assert "rank at most" not in msg


def test_echoed_values_are_cut_short(srv: Limited, good: Client) -> None:
    name = "m" * (4 << 20)
    with authed(srv) as raw:
        raw.send({"id": 1, "op": "infer", "model": name, "inputs": {"x": X}})
        msg = err(raw.recv(), "NOT_FOUND", "field 'model'", f"... ({4 << 20} bytes)")
        assert len(msg) < 600
        raw.send({"id": 2, "op": "m" * 100_000})
        assert len(err(raw.recv(), "INVALID_ARGUMENT", "field 'op'", "(100000 bytes)")) < 600
        raw.send({"id": 3, "op": "infer", "model": "linear", "inputs": {"x" * 100_000: X}})
        assert len(err(raw.recv(), "INVALID_ARGUMENT", "field 'inputs'")) < 1000


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -1.0, 0, 1e300])
def test_timeout_ms_must_be_finite_and_positive(srv: Limited, value: float) -> None:
    with authed(srv) as raw:
        raw.send(
            {"id": 1, "op": "infer", "model": "linear", "inputs": {"x": X}, "timeout_ms": value}
        )
        err(raw.recv(), "INVALID_ARGUMENT", "timeout_ms", "finite")
        raw.send({"id": 2, "op": "infer", "model": "linear", "inputs": {"x": X}, "timeout_ms": 5e3})
        assert raw.recv()["ok"] is True


def test_sdk_connection_survives_idling_before_its_first_request(srv: Limited) -> None:
    """The SDK completes a frame when it connects, so a client made long before its
    first request is not taken for a slowloris."""
    with Client(srv.unix_url) as c, Client(srv.tcp_url, token=TOKEN) as t:
        time.sleep(1.6)  # the idleness under test: past handshake_timeout_seconds (1 s)
        served(c)
        served(t)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=fuzzing.cases(512))  # max_frame_bytes_before_auth: headers past it close
def _fuzz_before_auth(srv: Limited, good: Client, case: list[fuzzing.Frame]) -> None:
    """Hostile frames on a TCP connection that has not authenticated: only a correct
    `auth` is answered ok; everything else is UNAUTHENTICATED (or an envelope error) and
    the connection is closed; the Unix client keeps being served."""
    out = fuzzing.run_case(srv.tcp_url, case, oversize="UNAUTHENTICATED")
    for r in out.replies:
        assert not r["ok"] or r["id"] is not None, r
    if out.replies and out.replies[-1]["ok"] is False:
        assert out.replies[-1]["error"]["code"] == "UNAUTHENTICATED", out.replies
    assert good.health()["live"] is True


def test_fuzz_before_auth(srv: Limited, good: Client) -> None:
    _fuzz_before_auth(srv, good)
