"""Stopping under steady traffic (issue 11, issue 15): SIGTERM turns readiness off at
once, serves `drain_delay_seconds` more, then refuses new requests with UNAVAILABLE
"stopping", answers everything it accepted, closes connections once idle and exits 0
long before `grace_seconds`. Also the second SIGTERM and SIGINT (docs/deploy.md)."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ringserve.client import Client
from ringserve.client.common import infer_request
from ringserve.client.errors import ConnectionClosed
from ringserve.runtime.config import ServerConfig
from ringserve.runtime.launch import free_port

from conftest import models_toml
from faults import (
    FOREVER,
    LoggedServer,
    code_of,
    send_many,
    shm_of,
    slow_inputs,
    wait_for,
)

SMALL_RINGS = "ring_bytes = 1048576"
GRACE = 60.0


def stopping_reply(reply: dict[str, Any]) -> bool:
    return (
        not reply["ok"]
        and reply["error"]["code"] == "UNAVAILABLE"
        and "stopping" in reply["error"]["message"]
    )


class Sender(threading.Thread):
    """One connection that keeps `depth` requests outstanding until the server says it
    is stopping (then, as a client that retries elsewhere does, sends nothing more on
    it) and records every reply; then expects the server to close the connection."""

    def __init__(self, url: str, depth: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.depth = depth
        self.replies: list[tuple[float, dict[str, Any]]] = []
        self.sent = 0
        self.unanswered = 0  # requests whose connection closed before their reply
        self.told = False
        self.closed_by_server = False
        self.error: BaseException | None = None
        self.inputs = slow_inputs(n=600)

    def oks(self, after: float = 0.0) -> int:
        return sum(1 for t, r in self.replies if r["ok"] and t > after)

    def run(self) -> None:
        try:
            with Client(self.url, timeout=30.0) as c:
                outstanding: set[int] = set()
                while True:
                    while not self.told and len(outstanding) < self.depth:
                        req = infer_request("slow", self.inputs, None, None, None, None)
                        outstanding.add(c.send(req))
                        self.sent += 1
                    if not outstanding:
                        break
                    try:
                        msg = c.recv()
                    except ConnectionClosed:
                        self.unanswered = len(outstanding)
                        self.closed_by_server = True
                        return
                    outstanding.discard(msg["id"])
                    self.replies.append((time.monotonic(), msg))
                    self.told = self.told or stopping_reply(msg)
                try:  # told and nothing outstanding: the server closes the connection
                    extra = c.recv()
                    raise AssertionError(f"a reply nobody asked for: {extra}")
                except ConnectionClosed:
                    self.closed_by_server = True
        except BaseException as exc:
            self.error = exc


def test_sigterm_under_steady_load_drains_and_exits_0(model_root: Path) -> None:
    delay = 1.5
    toml = models_toml(model_root, ["slow"])
    srv = LoggedServer(
        toml, f"{SMALL_RINGS}\ngrace_seconds = {GRACE}\ndrain_delay_seconds = {delay}"
    )
    with srv:
        assert srv.proc is not None
        senders = [Sender(srv.tcp_url, depth=1 + 2 * (i % 2)) for i in range(6)]
        senders += [Sender(srv.unix_url, depth=1 + 2 * (i % 2)) for i in range(4)]
        with Client(srv.unix_url, timeout=10) as watch:
            for s in senders:
                s.start()
            wait_for(lambda: all(s.oks() >= 5 for s in senders), 60, "every sender served", srv)
            t_term = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            # Readiness is off at once, while requests are still served normally.
            wait_for(lambda: not watch.health()["ready"], 2, "readiness false", srv)
            t_unready = time.monotonic()
            assert t_unready - t_term < 1.0
            wait_for(
                lambda: all(s.oks(after=t_unready) >= 2 for s in senders),
                delay,
                "requests served after readiness went false (the drain delay)",
                srv,
            )
        for s in senders:
            s.join(30)
        code = srv.proc.wait(GRACE)
        took = time.monotonic() - t_term
    assert code == 0, srv.log()
    for s in senders:
        assert not s.is_alive() and s.error is None, (s.url, s.error)
        codes = {code_of(r) for _, r in s.replies}
        assert codes <= {"OK", "UNAVAILABLE"}, codes
        assert all(r["ok"] or stopping_reply(r) for _, r in s.replies), s.replies[-3:]
        # Every request sent got its reply (those accepted before the drain an answer,
        # the later ones "stopping"), and the server then closed the connection.
        assert s.unanswered == 0 and len(s.replies) == s.sent, (s.url, s.sent, s.unanswered)
        assert s.told and s.closed_by_server, s.url
        # Nothing was refused before the drain delay had passed.
        first_refusal = min(t for t, r in s.replies if not r["ok"])
        assert first_refusal >= t_term + delay * 0.9, (first_refusal - t_term, delay)
    # Exits as soon as that is done: well before the grace period.
    assert took < delay + 10, took
    assert srv.grep("stopping (drain)") and srv.grep("ringserve: stopped")
    assert shm_of(srv.name) == set()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_readyz_turns_503_at_sigterm_and_a_second_sigterm_skips_the_delay(
    model_root: Path,
) -> None:
    ports = {"metrics": free_port()}
    if "http" in ServerConfig.__dataclass_fields__:  # the REST listener, when it exists
        ports["http"] = free_port()
    srv = LoggedServer(
        models_toml(model_root, ["slow"]),
        f"{SMALL_RINGS}\ngrace_seconds = {GRACE}\ndrain_delay_seconds = {GRACE}\n"
        + "".join(f'{k} = "127.0.0.1:{p}"\n' for k, p in ports.items()),
    )
    probes = [f"http://127.0.0.1:{p}" for p in ports.values()]
    with srv:
        assert srv.proc is not None
        with srv.client() as c:
            assert {http_status(f"{p}/readyz") for p in probes} == {200}
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            # The moment the stop begins, on both listeners; liveness stays.
            wait_for(
                lambda: {http_status(f"{p}/readyz") for p in probes} == {503},
                1.0,
                "/readyz 503",
                srv,
            )
            assert {http_status(f"{p}/healthz") for p in probes} == {200}
            assert not c.health()["ready"]
            c.infer("slow", slow_inputs(n=10))  # served during the delay
            srv.proc.send_signal(signal.SIGTERM)
            srv.wait_log("second SIGTERM")
            reply = c.recv(c.send(infer_request("slow", slow_inputs(n=10), *[None] * 4)))
            assert stopping_reply(reply), reply
        assert srv.proc.wait(GRACE) == 0, srv.log()
        assert time.monotonic() - t0 < 15


def test_sigint_during_a_drain_is_quick_and_a_second_sigint_kills(model_root: Path) -> None:
    srv = LoggedServer(
        models_toml(model_root, ["slow"]),
        f"{SMALL_RINGS}\ngrace_seconds = {GRACE}\ndrain_delay_seconds = {GRACE}",
    )
    with srv:
        assert srv.proc is not None
        with srv.client() as c, srv.client() as watch:
            # Two calls that never end fill the worker's ring; a third waits in the queue.
            ids = send_many(c, "slow", [slow_inputs(n=FOREVER)] * 2 + [slow_inputs(n=10)])
            wait_for(
                lambda: watch.stats()["models"]["slow"]["queue_depth"] == 1,
                30,
                "2 held by the worker, 1 queued",
                srv,
            )
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: not watch.health()["ready"], 2, "readiness false", srv)
            srv.proc.send_signal(signal.SIGINT)
            # Quick: no drain delay; the queued request is answered at once.
            queued = c.recv(ids[2])
            assert stopping_reply(queued), queued
            assert srv.proc.poll() is None  # what the worker holds still runs
            srv.proc.send_signal(signal.SIGINT)
            srv.wait_log("second SIGINT")
            held = [c.recv(i) for i in ids[:2]]
            assert [code_of(r) for r in held] == ["UNAVAILABLE"] * 2, held
        assert srv.proc.wait(GRACE) == 0, srv.log()
        assert time.monotonic() - t0 < 15
        assert shm_of(srv.name) == set()
