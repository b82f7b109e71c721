"""Faults made to happen for real: crashed, failing and hung workers, a dead
supervisor, stopping under load, and reloads. Every test starts its own server (the
faults would disturb the shared one) and leaves no process or /dev/shm object."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ringserve.client import Client, RingserveError

from conftest import models_toml
from faults import (
    FOREVER,
    LoggedServer,
    code_of,
    collect,
    gone,
    linear_inputs,
    ready,
    send_many,
    shm_of,
    slow_inputs,
    wait_for,
)

SMALL_RINGS = "ring_bytes = 1048576"


def instances(count: int = 1, intra: int = 1) -> str:
    return f"  [models.instances]\n  count = {count}\n  intra_op_threads = {intra}"


def wait_all_ready(srv: LoggedServer, model: str, count: int, timeout: float = 120.0) -> list:
    return wait_for(
        lambda: (
            (ws := srv.workers(model))
            and len(ws) == count
            and all(w["state"] == "ready" for w in ws)
            and ws
        ),
        timeout,
        f"{count} ready workers of {model}",
        srv,
    )


# ---- 1. a crashed worker --------------------------------------------------------------
def test_killed_worker_requests_answered_and_worker_respawned(model_root: Path) -> None:
    """Two instances: what the victim had not started is retried on the other one.
    (One instance, where everything it held and the queue fail at once, is covered by
    the hung-worker test below: a kill on a timeout is handled as the same crash.)"""
    count = 2
    toml = models_toml(model_root, ["slow"], {"slow": instances(count)})
    with LoggedServer(toml, SMALL_RINGS) as srv:
        victim = wait_all_ready(srv, "slow", count)[0]
        total = 10
        with srv.client() as c, srv.client() as watch:
            ids = send_many(c, "slow", [slow_inputs(0.5)] * total)
            # Every worker holds worker_inflight (2) records, the rest wait in the queue.
            wait_for(
                lambda: (
                    (st := watch.stats())
                    and sum(w["inflight"] for w in st["workers"]) == 2 * count
                    and st["models"]["slow"]["queue_depth"] > 0
                ),
                30,
                "requests in flight and queued",
                srv,
            )
            os.kill(victim["pid"], signal.SIGKILL)
            replies = collect(c, ids)
        codes = [code_of(r) for _, r in replies.values()]
        assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
        # Only the record the victim was computing is lost; the one it had not started
        # is retried on the other worker, and the queue is served there.
        assert codes.count("UNAVAILABLE") <= 1, codes
        assert codes.count("OK") >= total - 1, codes
        for _, r in replies.values():
            if not r["ok"]:
                msg = r["error"]["message"]
                assert f"worker slow/1/w{victim['index']}." in msg and "-9" in msg, r
        wait_for(lambda: gone(victim["pid"]), 10, "the killed worker reaped", srv)
        # Respawned after the first backoff step, ready, serving.
        fresh = wait_for(
            lambda: [
                w
                for w in srv.workers("slow")
                if w["index"] == victim["index"]
                and w["pid"] != victim["pid"]
                and w["state"] == "ready"
            ],
            60,
            "a new worker in the victim's slot",
            srv,
        )[0]
        assert fresh["restarts"] == 1
        wait_for(lambda: ready(srv), 30, "ready again", srv)
        with srv.client() as c:
            st = c.stats()
            assert st["server"]["restarts"] == {f"slow/1/w{victim['index']}": 1}
            out = c.infer("slow", slow_inputs(n=3))
            assert out["y"].shape == (1, 4)
        assert srv.grep(f"restarting slow/1/w{victim['index']} in 0.25s")
        assert srv.stop() == 0


def test_worker_failing_to_load_backs_off(model_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "1" / "variables").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"\x08\x01this is not a SavedModel" * 8)
    toml = models_toml(model_root, ["linear"]) + (
        f'\n[[models]]\nname = "broken"\nbase_path = "{broken}"\n'
    )
    with LoggedServer(toml, SMALL_RINGS, wait=False) as srv:
        wait_for(
            lambda: (
                {m["name"]: m["state"] for m in Client(srv.unix_url).models()}
                == {"linear": "AVAILABLE", "broken": "UNAVAILABLE"}
            ),
            120,
            "linear AVAILABLE and broken UNAVAILABLE",
            srv,
        )
        with srv.client() as c:
            h = c.health()
            assert h["live"] is True and h["ready"] is False, h
            m = next(m for m in c.models() if m["name"] == "broken")
            assert "load failed" in m["version_states"]["1"]["message"], m
            with pytest.raises(RingserveError) as e:
                c.infer("broken", {"x": np.zeros((1, 16), np.float32)})
            assert e.value.code == "UNAVAILABLE"
            c.infer("linear", linear_inputs())  # the other model is not disturbed
        # Exponential backoff, not a fast loop: 0.25 s, 0.5 s, 1 s between attempts,
        # and each new attempt starts no sooner than its delay after the failure.
        hits = srv.wait_log("restarting broken/1/w0 in", timeout=120, count=3)
        delays = [float(re.search(r"in ([\d.]+)s", line).group(1)) for _, line in hits[:3]]  # type: ignore[union-attr]
        assert delays == [0.25, 0.5, 1.0], delays
        starts = wait_for(
            lambda: (
                (s := [t for t, ln in srv.grep("worker broken/1/w0.") if "started, pid" in ln])
                and len(s) >= 4
                and s
            ),
            60,
            "the 4th start (3rd retry)",
            srv,
        )
        for (t_fail, _), delay, t_next in zip(hits[:3], delays, starts[1:4], strict=True):
            # (times are when this process read the lines: allow 0.1 s of scheduling)
            assert t_next - t_fail >= delay - 0.1, (t_fail, delay, t_next, srv.log())
        # No fast loop: four attempts took at least the sum of the delays, and no
        # attempt started before the previous one had failed.
        assert starts[3] - starts[0] >= sum(delays), starts
        fails = [t for t, _ in srv.grep("died: load failed")]
        assert all(fails[i] <= starts[i + 1] for i in range(3)), (fails, starts)
        with srv.client() as c:
            assert c.stats()["server"]["restarts"]["broken/1/w0"] >= 3
        assert srv.stop() == 0


# ---- 2. a hung worker -----------------------------------------------------------------
@pytest.fixture(scope="module")
def hb_server(model_root: Path) -> Iterator[LoggedServer]:
    toml = models_toml(model_root, ["slow"])
    srv = LoggedServer(toml, f"{SMALL_RINGS}\nheartbeat_timeout_seconds = 1.0")
    srv.start()
    yield srv
    assert srv.stop() == 0


def test_hung_worker_killed_and_restarted(hb_server: LoggedServer) -> None:
    srv = hb_server
    old = wait_all_ready(srv, "slow", 1)[0]
    kills = len(srv.grep("holding a request: killing"))
    with srv.client() as c:
        t0 = time.monotonic()
        # One call that would run for hours, one waiting behind it in the worker's
        # ring (worker_inflight = 2), one in the queue.
        ids = send_many(c, "slow", [slow_inputs(n=FOREVER), slow_inputs(n=3), slow_inputs(n=3)])
        replies = collect(c, ids)
    took = time.monotonic() - t0
    hung, behind, queued = (replies[i][1] for i in ids)
    # The only instance is gone: everything is answered UNAVAILABLE at once.
    assert code_of(hung) == "UNAVAILABLE", hung
    assert "hung: no heartbeat" in hung["error"]["message"], hung
    assert code_of(behind) == "UNAVAILABLE", behind
    assert code_of(queued) == "UNAVAILABLE", queued
    assert "no live worker" in queued["error"]["message"], queued
    # limit 1 s, checked every 0.25 s, plus at most 1 s of idle before the call
    assert took < 10, took
    assert len(srv.grep("holding a request: killing")) == kills + 1
    wait_for(lambda: gone(old["pid"]), 10, "the hung worker reaped", srv)
    new = wait_for(
        lambda: [
            w for w in srv.workers("slow") if w["pid"] != old["pid"] and w["state"] == "ready"
        ],
        60,
        "a new slow worker",
        srv,
    )[0]
    assert new["restarts"] == old["restarts"] + 1
    wait_for(lambda: ready(srv), 30, "ready again", srv)
    with srv.client() as c:
        assert c.infer("slow", slow_inputs(n=10))["y"].shape == (1, 4)


def test_heartbeat_counts_only_time_holding_the_request(hb_server: LoggedServer) -> None:
    srv = hb_server
    wait_all_ready(srv, "slow", 1)
    wait_for(lambda: ready(srv), 60, "ready", srv)
    with srv.client() as c:
        for _ in range(3):
            c.infer("slow", slow_inputs(n=3))  # the worker stamps, then idles up to 1 s
            time.sleep(0.85)  # the scenario: idle (not synchronisation)
            # Holds the request ~0.5 s, half the limit: must not count as hung.
            out = c.infer("slow", slow_inputs(0.5))
            assert out["y"].shape == (1, 4)


# ---- 3. a dead supervisor -------------------------------------------------------------
def test_supervisor_killed_workers_follow_and_restart_is_clean(model_root: Path) -> None:
    toml = models_toml(model_root, ["slow"])
    first = LoggedServer(toml, SMALL_RINGS)
    with first:
        pids = [w["pid"] for w in first.workers()]
        assert len(pids) == 1
        with first.client() as c:  # a worker busy in a call dies too
            send_many(c, "slow", [slow_inputs(n=FOREVER)])
            wait_for(lambda: any(w["inflight"] for w in first.workers("slow")), 10, "busy", first)
            assert first.proc is not None
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(10)
        # PR_SET_PDEATHSIG: every worker goes with its parent, nobody reaps for them.
        wait_for(lambda: all(gone(p) for p in pids), 10, "the workers to exit", first)
        assert os.path.exists(first.unix), "a killed server cannot remove its socket"
        assert shm_of(first.name) == set(), "segment names are unlinked at creation"
        # Same socket path and instance name: the stale socket file is claimed.
        second = LoggedServer(
            toml,
            f'{SMALL_RINGS}\nunix = "{first.unix}"\nname = "{first.name}"',
            workdir=str(first.dir),
        )
        with second:
            with second.client() as c:
                assert c.health()["ready"]
                c.infer("slow", slow_inputs(n=3))
            assert shm_of(first.name) == set()
            assert second.stop() == 0
        assert not os.path.exists(first.unix)
    assert shm_of(first.name) == set()


# ---- 4. stopping ----------------------------------------------------------------------
def test_sigterm_drains_in_flight_and_queued(model_root: Path) -> None:
    grace = 30.0
    toml = models_toml(model_root, ["slow"])
    srv = LoggedServer(toml, f"{SMALL_RINGS}\ngrace_seconds = {grace}")
    with srv:
        workers = [w["pid"] for w in srv.workers()]
        with srv.client() as c, srv.client() as watch:
            ids = send_many(c, "slow", [slow_inputs(0.3)] * 6)
            wait_for(
                lambda: (
                    (st := watch.stats())
                    and st["workers"][0]["inflight"] == 2
                    and st["models"]["slow"]["queue_depth"] >= 2
                ),
                30,
                "2 in flight, more queued",
                srv,
            )
            assert srv.proc is not None
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            # Readiness goes false at once (on a connection opened before the stop);
            # no new connection is accepted.
            wait_for(lambda: not watch.health()["ready"], 5, "readiness false", srv)
            assert watch.health()["live"]
            with pytest.raises(OSError):
                Client(srv.unix_url, timeout=5).health()
            replies = collect(c, ids)
        assert [code_of(r) for _, r in replies.values()] == ["OK"] * 6
        code = srv.proc.wait(grace + 10)
        took = time.monotonic() - t0
        assert code == 0, srv.log()
        assert took < grace, took
        assert not os.path.exists(srv.unix)
        assert shm_of(srv.name) == set()
        assert all(gone(p) for p in workers)
        assert srv.grep("stopping (drain)") and srv.grep("ringserve: stopped")


def test_sigterm_kills_a_call_running_past_the_grace_period(model_root: Path) -> None:
    grace = 1.0
    toml = models_toml(model_root, ["slow"])
    srv = LoggedServer(toml, f"{SMALL_RINGS}\ngrace_seconds = {grace}")
    with srv:
        (worker,) = srv.workers()
        with srv.client() as c, srv.client() as watch:
            ids = send_many(c, "slow", [slow_inputs(n=FOREVER), slow_inputs(n=3), slow_inputs(n=3)])
            wait_for(
                lambda: (
                    (st := watch.stats())
                    and st["workers"][0]["inflight"] == 2
                    and st["models"]["slow"]["queue_depth"] == 1
                ),
                30,
                "2 in flight, 1 queued",
                srv,
            )
            assert srv.proc is not None
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            replies = collect(c, ids)
        # The running call is killed at the end of the grace period; what it held and
        # what was queued behind it are answered, not dropped.
        assert [code_of(r) for _, r in replies.values()] == ["UNAVAILABLE"] * 3, replies
        code = srv.proc.wait(30)
        took = time.monotonic() - t0
        assert code == 0, srv.log()
        assert grace <= took < grace + 5, took
        assert gone(worker["pid"])
        assert not os.path.exists(srv.unix)
        assert shm_of(srv.name) == set()


def test_sigint_fails_queued_at_once_and_finishes_in_flight(model_root: Path) -> None:
    toml = models_toml(model_root, ["slow"])
    srv = LoggedServer(toml, f"{SMALL_RINGS}\ngrace_seconds = 30")
    with srv:
        with srv.client() as c, srv.client() as watch:
            ids = send_many(c, "slow", [slow_inputs(1.0)] * 8)
            wait_for(
                lambda: (
                    (st := watch.stats())
                    and st["workers"][0]["inflight"] == 2
                    and st["models"]["slow"]["queue_depth"] >= 4
                ),
                30,
                "2 in flight, more queued",
                srv,
            )
            assert srv.proc is not None
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGINT)
            wait_for(lambda: not watch.health()["ready"], 5, "readiness false", srv)
            replies = collect(c, ids)
        by_time = sorted(replies.values(), key=lambda tr: tr[0])
        codes = [code_of(r) for _, r in by_time]
        ok = [t for t, r in by_time if r["ok"]]
        failed = [(t, r) for t, r in by_time if not r["ok"]]
        assert set(codes) == {"OK", "UNAVAILABLE"}, codes
        assert len(ok) >= 2 and len(failed) >= 4, codes  # what was in the ring runs
        for _, r in failed:
            assert r["error"]["code"] == "UNAVAILABLE"
            assert "stopping" in r["error"]["message"], r
        # Without waiting: every queued request is failed before the request that had
        # not yet started at SIGINT (a full ~1 s call) completes.
        assert max(t for t, _ in failed) < ok[-1], by_time
        code = srv.proc.wait(30)
        assert code == 0, srv.log()
        assert time.monotonic() - t0 < 30
        assert srv.grep("stopping (fast)")
        assert not os.path.exists(srv.unix)
        assert shm_of(srv.name) == set()


# ---- 5. reload ------------------------------------------------------------------------
class Load(threading.Thread):
    """Keeps one model busy from another connection, counting outcomes."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray]) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.inputs = url, model, inputs
        self.ok = 0
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with Client(self.url, timeout=30) as c:
            while not self.halt.is_set():
                try:
                    c.infer(self.model, self.inputs)
                    self.ok += 1
                except Exception as exc:
                    self.errors.append(repr(exc))
                self.halt.wait(0.005)  # pacing, so the load leaves CPU for loading

    def finish(self) -> None:
        self.halt.set()
        self.join(30)


def rewrite_models(srv: LoggedServer, models: str) -> None:
    """Keep the [server] table, replace every [[models]] table."""
    server = srv.config_path.read_text().split("[[models]]")[0]
    srv.config_path.write_text(server + models)


def hup(srv: LoggedServer) -> None:
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)


def model_states(srv: LoggedServer) -> dict[str, str]:
    with srv.client() as c:
        return {m["name"]: m["state"] for m in c.models()}


def test_sighup_reload_adds_removes_and_refuses(model_root: Path) -> None:
    srv = LoggedServer(models_toml(model_root, ["linear", "slow"]), SMALL_RINGS)
    with srv:
        linear_pid = srv.workers("linear")[0]["pid"]
        slow_pid = srv.workers("slow")[0]["pid"]
        load = Load(srv.unix_url, "linear", linear_inputs())
        load.start()
        try:
            wait_for(lambda: load.ok > 10, 30, "load running", srv)
            with srv.client() as c:
                # A call in progress on the model about to be removed: it is drained.
                (rid,) = send_many(c, "slow", [slow_inputs(1.0)])
                wait_for(
                    lambda: any(w["inflight"] for w in srv.workers("slow")), 10, "slow busy", srv
                )
                rewrite_models(srv, models_toml(model_root, ["linear", "strings"]))
                hup(srv)
                _, reply = collect(c, [rid])[rid]
                assert reply["ok"], reply
            srv.wait_log("reloaded")
            wait_for(
                lambda: model_states(srv) == {"linear": "AVAILABLE", "strings": "AVAILABLE"},
                120,
                "strings added and slow removed",
                srv,
            )
            ok_at_reload = load.ok
            wait_for(lambda: load.ok > ok_at_reload + 10, 30, "load still served", srv)
        finally:
            load.finish()
        # The unchanged model served throughout, from the same worker.
        assert load.errors == [], load.errors[:5]
        srv.wait_log("model slow: removed")
        wait_for(lambda: gone(slow_pid), 10, "the removed model's worker gone", srv)
        with srv.client() as c:
            assert c.health()["ready"]
            assert c.infer("strings", {"s": np.array([b"ab"], object)})["upper"][0] == b"AB"
            with pytest.raises(RingserveError) as e:
                c.infer("slow", slow_inputs(n=3))
            assert e.value.code == "NOT_FOUND"
        assert srv.grep(f"worker linear/1/w0.1 ready: pid {linear_pid}")
        assert not srv.grep("worker linear/1/w0.1 stopped")
        assert len(srv.grep("worker linear/1/")) == 2  # started, ready: never restarted

        # An invalid config is refused; the running one stays.
        running = srv.config_path.read_text()
        srv.config_path.write_text(running.replace("[server]", "[server]\nbogus_key = 1", 1))
        hup(srv)
        refused = srv.wait_log("reload refused, keeping the running config")
        assert "bogus_key" in refused[0][1]
        with srv.client() as c:
            assert model_states(srv) == {"linear": "AVAILABLE", "strings": "AVAILABLE"}
            assert c.health()["ready"]
            c.infer("linear", linear_inputs())
        srv.config_path.write_text(running)
        assert srv.stop() == 0


def test_stats_after_a_reload_removed_a_model(model_root: Path) -> None:
    srv = LoggedServer(models_toml(model_root, ["linear", "ints"]), SMALL_RINGS)
    with srv:
        with srv.client() as c:  # ints has served, so it has counters
            c.infer("ints", {"a": np.ones((1, 3), np.int64), "b": np.ones((1, 3), np.int64)})
        rewrite_models(srv, models_toml(model_root, ["linear"]))
        hup(srv)
        wait_for(lambda: model_states(srv) == {"linear": "AVAILABLE"}, 60, "ints removed", srv)
        try:
            with srv.client() as c:
                st = c.stats()
        finally:
            assert srv.stop() == 0
        assert [w["model"] for w in st["workers"]] == ["linear"]


def test_sighup_rolls_changed_instances_one_at_a_time(model_root: Path) -> None:
    count = 2
    toml = models_toml(model_root, ["ints"], {"ints": instances(count, intra=1)})
    srv = LoggedServer(toml, f"{SMALL_RINGS}\nversion_poll_seconds = 0.5\ngrace_seconds = 5")
    ints = {"a": np.ones((1, 3), np.int64), "b": np.ones((1, 3), np.int64)}
    with srv:
        old = {w["pid"] for w in wait_all_ready(srv, "ints", count)}
        assert {w["intra_op_threads"] for w in srv.workers("ints")} == {1}
        load = Load(srv.unix_url, "ints", ints)
        load.start()
        try:
            wait_for(lambda: load.ok > 10, 30, "load running", srv)
            rewrite_models(srv, models_toml(model_root, ["ints"], {"ints": instances(count, 2)}))
            hup(srv)
            most = 0

            def rolled() -> bool:
                nonlocal most
                ws = srv.workers("ints")
                most = max(most, len(ws))
                # One replacement at a time: never more than count + 1 workers.
                assert most <= count + 1, [(w["index"], w["pid"], w["state"]) for w in ws]
                return len(ws) == count and all(
                    w["state"] == "ready" and w["intra_op_threads"] == 2 for w in ws
                )

            wait_for(rolled, 120, "ints rolled to intra_op_threads = 2", srv)
        finally:
            load.finish()
        assert load.errors == [], load.errors[:5]
        assert {w["pid"] for w in srv.workers("ints")}.isdisjoint(old)
        # Each new worker serves before its predecessor stops, then the next begins.
        order = [
            line
            for _, line in srv.lines
            if re.search(r"rolling ints|worker ints/1/w\d\.\d+ (ready|stopped)", line)
        ]
        events = [re.search(r"(rolling|ready|stopped)", ln).group(1) for ln in order]  # type: ignore[union-attr]
        assert events[count:] == ["rolling", "ready", "stopped"] * count, order
        assert srv.stop() == 0


def test_reload_applies_server_keys_that_need_no_restart(model_root: Path) -> None:
    srv = LoggedServer(models_toml(model_root, ["slow"]), SMALL_RINGS)
    with srv:
        text = srv.config_path.read_text()
        srv.config_path.write_text(
            text.replace("[server]", "[server]\ndefault_timeout_ms = 200", 1)
        )
        hup(srv)
        line = srv.wait_log("reloaded")[0][1]
        assert "need a restart" not in srv.log()
        try:
            with srv.client() as c, pytest.raises(RingserveError) as e:
                c.infer("slow", slow_inputs(2.0))  # no timeout_ms: the new default applies
        finally:
            assert srv.stop() == 0
        assert e.value.code == "DEADLINE_EXCEEDED", line
