"""Worker groups (docs/groups.md): several models in each worker process of a group,
each with its own queue; fairness between them; crashes, reloads and version swaps
without a failed request; one member failing to load leaves the others serving."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringserve.client import Client, RingserveError

from faults import FOREVER, LoggedServer, code_of, collect, gone, send_many, slow_inputs, wait_for
from models import reference

GROUP_MEMBERS = ["slow", "linear", "ints", "strings"]  # the bursting model first


def _models(root: Path, names: list[str], extra: dict[str, str] | None = None) -> str:
    out = []
    for n in names:
        out.append(f'[[models]]\nname = "{n}"\nbase_path = "{root / n}"\n')
        if extra and n in extra:
            out.append(extra[n] + "\n")
    return "\n".join(out)


def _group(name: str, members: list[str], count: int) -> str:
    listed = ", ".join(f'"{m}"' for m in members)
    return (
        f'\n[[groups]]\nname = "{name}"\nmodels = [{listed}]\n'
        f"  [groups.instances]\n  count = {count}\n"
    )


INPUTS: dict[str, dict[str, np.ndarray]] = {
    "linear": {"x": np.arange(32, dtype=np.float32).reshape(2, 16) / 10},
    "linear2": {"x": np.arange(32, dtype=np.float32).reshape(2, 16) / 10},
    "ints": {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.full((2, 3), 3, np.int64)},
    "strings": {"s": np.array([b"ab", b"group"], dtype=object)},
}


@pytest.fixture(scope="module")
def grouped(model_root: Path) -> Iterator[LoggedServer]:
    """linear, ints, strings and slow in one group of two workers."""
    toml = _models(model_root, GROUP_MEMBERS) + _group("g", GROUP_MEMBERS, 2)
    srv = LoggedServer(toml, "ring_bytes = 1048576")
    srv.start()
    # Ready means every model has a serving worker: the second may still be loading.
    wait_for(lambda: [w["state"] for w in srv.workers("g")] == ["ready"] * 2, 120, "both", srv)
    yield srv
    assert srv.stop() == 0, srv.log()


def test_group_of_models_with_different_signatures(grouped: LoggedServer, model_root: Path) -> None:
    with grouped.client() as c:
        for name in ("linear", "ints", "strings"):
            out = c.infer(name, INPUTS[name])
            want = reference(model_root / name, INPUTS[name])
            assert sorted(out) == sorted(want), name
            for k, a in want.items():
                if a.dtype.kind in "OSU":
                    assert list(out[k]) == list(a), (name, k)
                else:
                    np.testing.assert_allclose(out[k], a, rtol=1e-6)
        # The second signature of ints, through the same group worker.
        out = c.infer("ints", {"n": np.array([1, 2], np.int32)}, signature="double")
        assert out["twice"].tolist() == [2, 4]
        meta = c.metadata("strings")["signatures"]["serving_default"]
        assert set(meta["inputs"]) == {"s"}
        st = c.stats()
    ws = [w for w in st["workers"] if w.get("group") == "g"]
    assert len(ws) == 2, st["workers"]
    held = {(m["model"], m["version"], m["state"]) for m in ws[0]["models"]}
    assert held == {(n, 1, "ready") for n in GROUP_MEMBERS}
    # Per-model statistics, not per group.
    assert st["models"]["strings"]["success"] >= 1
    assert st["models"]["linear"]["success"] >= 1


def test_fairness_under_burst(grouped: LoggedServer) -> None:
    """A burst of one model's slow requests, deep in its queue, does not hold back
    another model of the same group: the other's requests are answered while the
    burst is still running (round robin on the shared rings, docs/groups.md)."""
    burst = [slow_inputs(0.02) for _ in range(60)]
    other_done: list[float] = []
    stop = threading.Event()

    def other() -> None:
        with grouped.client() as c:
            while not stop.is_set():
                c.infer("linear", INPUTS["linear"])
                other_done.append(time.monotonic())

    with grouped.client(timeout=120) as c:
        ids = send_many(c, "slow", burst)
        t = threading.Thread(target=other, daemon=True)
        t.start()
        try:
            got = collect(c, ids)
        finally:
            stop.set()
            t.join(30)
    assert all(code_of(r) == "OK" for _, r in got.values())
    last_slow = max(at for at, _ in got.values())
    during = [at for at in other_done if at < last_slow]
    # Without the round robin the burst holds every slot of both workers until its
    # queue is empty, and the other model gets its first answer after the burst.
    assert len(during) >= 5, (len(during), len(other_done))


class Load:
    """Closed-loop clients on several models; every reply is recorded."""

    def __init__(self, url: str, models: list[str], per_model: int = 1) -> None:
        self.halt = threading.Event()
        self.ok: dict[str, int] = dict.fromkeys(models, 0)
        self.errors: list[tuple[str, str]] = []
        self.versions: dict[str, set[int]] = {m: set() for m in models}
        self.threads = [
            threading.Thread(target=self._run, args=(url, m), daemon=True)
            for m in models
            for _ in range(per_model)
        ]
        for t in self.threads:
            t.start()

    def _run(self, url: str, model: str) -> None:
        with Client(url, timeout=60) as c:
            while not self.halt.is_set():
                try:
                    r = c.call("infer", model=model, inputs=_wire(INPUTS[model]))
                    self.versions[model].add(r["version"])
                    self.ok[model] += 1
                except RingserveError as exc:
                    self.errors.append((model, f"{exc.code}: {exc}"))
                except Exception as exc:  # a lost reply or connection fails the test
                    self.errors.append((model, repr(exc)))
                    return

    def total(self) -> int:
        return sum(self.ok.values())

    def finish(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(60)


def _wire(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    out = {}
    for k, a in inputs.items():
        if a.dtype.kind == "O":
            out[k] = {"dtype": "string", "shape": list(a.shape), "data": list(a)}
        else:
            out[k] = {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}
    return out


def test_kill9_group_worker_under_load(grouped: LoggedServer) -> None:
    """Every request of every model is answered; the group respawns and serves again.
    (Last in this module: it replaces a worker of the shared server.)"""
    models = ["linear", "ints", "strings"]
    with grouped.client() as c:
        before = [w for w in c.stats()["workers"] if w.get("group") == "g"]
        # One long request holds a worker, so the kill finds records in its ring.
        busy_id = send_many(c, "slow", [slow_inputs(n=FOREVER)])[0]
        wait_for(lambda: any(w["inflight"] for w in grouped.workers("g")), 30, "slow running")
        # The worker computing the slow request (the only record in flight so far).
        victim = next(w for w in grouped.workers("g") if w["inflight"])
        load = Load(grouped.unix_url, models, per_model=2)
        try:
            wait_for(lambda: all(load.ok[m] > 10 for m in models), 60, "load", grouped)
            os.kill(victim["pid"], signal.SIGKILL)
            reply = c.recv()  # the slow request: answered, not lost
            assert reply["id"] == busy_id
            wait_for(lambda: gone(victim["pid"]), 10, "victim gone")
            wait_for(
                lambda: len([w for w in grouped.workers("g") if w["state"] == "ready"]) == 2,
                120,
                "group respawned",
                grouped,
            )
            at = {m: load.ok[m] for m in models}
            wait_for(lambda: all(load.ok[m] > at[m] + 5 for m in models), 60, "served again")
        finally:
            load.finish()
    codes = {e.split(":")[0] for _, e in load.errors}
    # Only what the dead worker was computing may fail, and only as UNAVAILABLE.
    assert codes <= {"UNAVAILABLE"}, load.errors[:5]
    assert len(load.errors) <= 2, load.errors
    assert reply["ok"] is False and reply["error"]["code"] == "UNAVAILABLE"
    pids = {w["pid"] for w in grouped.workers("g")}
    assert victim["pid"] not in pids and len(pids) == 2
    assert {w["pid"] for w in before} - {victim["pid"]} <= pids
    assert grouped.grep("restarting g/0/w")


def test_reload_adds_and_removes_members_and_swaps_a_version(model_root: Path) -> None:
    """A reload moves `ints` out of the config and `strings` into the group while
    `linear2` swaps from version 1 to 2 in the group's workers: no request of the
    models that stay fails."""
    before = _models(
        model_root, ["linear", "ints", "linear2"], {"linear2": "version_policy = {specific = [1]}"}
    ) + _group("g", ["linear", "ints", "linear2"], 1)
    after = _models(
        model_root,
        ["linear", "strings", "linear2"],
        {"linear2": "version_policy = {specific = [2]}"},
    ) + _group("g", ["linear", "strings", "linear2"], 1)
    with LoggedServer(before, "ring_bytes = 1048576") as srv:
        load = Load(srv.unix_url, ["linear", "linear2"], per_model=2)
        try:
            wait_for(lambda: load.total() > 40, 60, "load running", srv)
            server = srv.config_path.read_text().split("[[models]]")[0]
            srv.config_path.write_text(server + after)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log("model linear2: version 1 unloaded", timeout=180)
            srv.wait_log("model ints: removed", timeout=60)
            at = load.total()
            wait_for(lambda: load.total() > at + 40, 60, "load after the reload", srv)
        finally:
            load.finish()
        assert load.errors == [], load.errors[:5]
        assert load.versions["linear2"] == {1, 2}
        with srv.client() as c:
            out = c.infer("strings", INPUTS["strings"])
            assert list(out["upper"]) == [b"AB", b"GROUP"]
            with pytest.raises(RingserveError) as exc:
                c.infer("ints", INPUTS["ints"])
            assert exc.value.code == "NOT_FOUND"
        # The old worker stops once what it held is answered.
        ws = wait_for(lambda: len(w := srv.workers("g")) == 1 and w, 60, "old worker gone", srv)
        for w in ws:
            held = {(m["model"], m["version"]) for m in w["models"]}
            assert held == {("linear", 1), ("strings", 1), ("linear2", 2)}


def test_one_member_failing_to_load_leaves_the_others_serving(
    model_root: Path, tmp_path: Path
) -> None:
    """A member that fails to load is UNAVAILABLE, the others serve; later, a new
    version of a member that fails to load in the new worker does not replace the old
    worker, which keeps serving the old version."""
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    lin = tmp_path / "lin"
    shutil.copytree(model_root / "linear" / "1", lin / "1")
    toml = (
        _models(model_root, ["ints"])
        + f'\n[[models]]\nname = "lin"\nbase_path = "{lin}"\n'
        + f'\n[[models]]\nname = "broken"\nbase_path = "{broken}"\n'
        + _group("g", ["lin", "broken", "ints"], 1)
    )
    # No load retries here: the pid checks below need the one worker to stay alone.
    server = "ring_bytes = 1048576\nversion_poll_seconds = 0.2\ngroup_load_retries = 0"
    with LoggedServer(toml, server, wait=False) as srv:
        srv.wait_log("model broken version 1: failed to load", timeout=120)
        with srv.client() as c:
            out = c.infer("lin", INPUTS["linear"])
            assert out["y"].shape == (2, 4)
            assert c.infer("ints", INPUTS["ints"])["sum"].shape == (2, 3)
            with pytest.raises(RingserveError) as exc:
                c.infer("broken", {"x": np.zeros((1, 1), np.float32)})
            assert exc.value.code == "UNAVAILABLE"
            assert "failed to load" in str(exc.value)
            h = c.health()
            assert h["ready"] is False  # a model is unavailable: not ready, others serve
            states = {m["name"]: m["state"] for m in c.models()}
            assert states == {"lin": "AVAILABLE", "ints": "AVAILABLE", "broken": "UNAVAILABLE"}
            (pid,) = [w["pid"] for w in srv.workers("g")]
            # A version 2 of lin that cannot load: the roll is abandoned.
            (lin / ".2").mkdir()
            (lin / ".2" / "saved_model.pb").write_bytes(b"not a SavedModel either")
            (lin / ".2").rename(lin / "2")
            srv.wait_log("roll of group g abandoned", timeout=120)
            reply = c.call("infer", model="lin", inputs=_wire(INPUTS["linear"]))
            assert reply["version"] == 1
            wait_for(lambda: [w["pid"] for w in srv.workers("g")] == [pid], 30, "new retired")


def _with_unloadable(model_root: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    """A group "g" of `ints` and `name`, whose version 1 is not a SavedModel (yet)."""
    base = tmp_path / name
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    toml = (
        _models(model_root, ["ints"])
        + f'\n[[models]]\nname = "{name}"\nbase_path = "{base}"\n'
        + _group("g", ["ints", name], 1)
    )
    return base, toml


def test_a_member_that_failed_to_load_is_retried(model_root: Path, tmp_path: Path) -> None:
    """A member that fails to load is tried again by a fresh worker of its group every
    group_load_retry_seconds (TF Serving's load retries): once its files are whole it
    serves, without a reload, and the other member never stops serving."""
    late, toml = _with_unloadable(model_root, tmp_path, "late")
    server = "ring_bytes = 1048576\ngroup_load_retries = 50\ngroup_load_retry_seconds = 0.5"
    with LoggedServer(toml, server, wait=False) as srv:
        srv.wait_log("model late version 1: failed to load", timeout=120)
        srv.wait_log("retry 2 of 50", timeout=120)  # retried, and still failing
        # A retry that loads nothing more is discarded: the serving worker stays.
        srv.wait_log("the new worker loaded nothing more; kept the old", timeout=120)
        with srv.client() as c:
            with pytest.raises(RingserveError) as exc:
                c.infer("late", INPUTS["linear"])
            assert exc.value.code == "UNAVAILABLE"
            _make_whole(model_root, late)  # the files become whole

            def late_serves() -> bool:
                return {m["name"]: m["state"] for m in c.models()}["late"] == "AVAILABLE"

            wait_for(late_serves, 120, "late AVAILABLE after a retry", srv)
            assert c.infer("late", INPUTS["linear"])["y"].shape == (2, 4)
            assert c.infer("ints", INPUTS["ints"])["sum"].shape == (2, 3)
        assert srv.grep("a fresh worker retries what failed to load")


def _make_whole(model_root: Path, late: Path) -> None:
    """Copy linear/1 into `late`/1, the graph last by a rename, as a deployment writes
    a version in place."""
    src = model_root / "linear" / "1"
    for entry in src.iterdir():
        if entry.name != "saved_model.pb":
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, late / "1" / entry.name)
    shutil.copy2(src / "saved_model.pb", late / "1" / ".saved_model.pb")
    os.replace(late / "1" / ".saved_model.pb", late / "1" / "saved_model.pb")


def test_every_worker_of_a_group_retries_what_it_failed_to_load(
    model_root: Path, tmp_path: Path
) -> None:
    """With two workers in the group, a member that loads once its files are whole is
    loaded again by both: the first fresh worker that serves it does not end the
    retries of the other worker, which lacks it (the member would otherwise be served
    by one worker of two)."""
    late, toml = _with_unloadable(model_root, tmp_path, "late")
    toml = toml.replace("count = 1", "count = 2")
    server = "ring_bytes = 1048576\ngroup_load_retries = 50\ngroup_load_retry_seconds = 0.5"
    with LoggedServer(toml, server, wait=False) as srv:
        srv.wait_log("model late version 1: failed to load", timeout=120, count=2)
        _make_whole(model_root, late)

        def held_by_both() -> bool:
            ws = srv.workers("g")
            held = [
                {(m["model"], m["state"]) for m in w.get("models", [])}
                for w in ws
                if w["state"] == "ready"
            ]
            return len(held) == 2 and all(("late", "ready") in h for h in held)

        wait_for(held_by_both, 180, "both group workers holding late", srv)
        with srv.client() as c:
            assert c.infer("late", INPUTS["linear"])["y"].shape == (2, 4)
            assert c.infer("ints", INPUTS["ints"])["sum"].shape == (2, 3)


def test_load_retries_stop_at_the_limit(model_root: Path, tmp_path: Path) -> None:
    """group_load_retries bounds the fresh workers a member that never loads costs."""
    _, toml = _with_unloadable(model_root, tmp_path, "bad")
    server = "ring_bytes = 1048576\ngroup_load_retries = 2\ngroup_load_retry_seconds = 0.2"
    with LoggedServer(toml, server, wait=False) as srv:
        srv.wait_log("failed to load after 2 retries", timeout=180)
        assert len(srv.grep("a fresh worker retries what failed to load")) == 2
        assert not srv.grep("retry 3 of 2")
        with srv.client() as c:
            assert c.infer("ints", INPUTS["ints"])["sum"].shape == (2, 3)
