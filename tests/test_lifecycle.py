"""Stopping: nothing is left behind, the exit code says how it went."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml, shm_entries
from faults import wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_removes_everything(model_root: Path, sig: int) -> None:
    before = shm_entries()
    srv = ServerProcess(models_toml(model_root, ["linear"]), "ring_bytes = 1048576")
    srv.start()
    try:
        with Client(srv.unix_url) as c:
            c.infer("linear", {"x": np.zeros((2, 16), np.float32)})
        assert os.path.exists(srv.unix)
        workers = [w["pid"] for w in Client(srv.unix_url).stats()["workers"]]
    finally:
        code = srv.stop(sig)
    assert code == 0
    assert not os.path.exists(srv.unix)
    assert shm_entries() - before == set()
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def test_stops_when_its_stderr_reader_is_gone(model_root: Path) -> None:
    """Its log lines have nowhere to go (a pipe whose reader exited: EPIPE), yet
    SIGTERM stops it cleanly: a log line is dropped, not raised in the stop path
    (before, the supervisor ignored every later signal and never exited)."""
    srv = ServerProcess(
        models_toml(model_root, ["linear"]), "ring_bytes = 1048576", stderr=subprocess.PIPE
    )
    srv.start()
    assert srv.proc is not None and srv.proc.stderr is not None
    srv.proc.stderr.close()
    code = srv.stop(signal.SIGTERM, timeout=30.0)
    assert code == 0  # past the timeout, stop() kills the group: -9


def test_a_worker_reports_a_failed_load_when_stderr_is_gone(tmp_path: Path) -> None:
    """Workers share the server's stderr. With its reader gone (EPIPE), a worker whose
    model fails to load still reports the failure, and the model's state says why,
    instead of the worker dying of the BrokenPipeError its log line raised (before,
    the state said only "exited with code 1")."""
    base = tmp_path / "broken"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    srv = ServerProcess(
        f'[[models]]\nname = "broken"\nbase_path = "{base}"\n',
        "ring_bytes = 1048576",
        wait_ready=False,
        stderr=subprocess.PIPE,
    )
    srv.start()
    assert srv.proc is not None and srv.proc.stderr is not None
    srv.proc.stderr.close()  # before the worker has imported TensorFlow
    try:

        def why() -> str:
            try:
                with Client(srv.unix_url, timeout=5) as c:
                    (m,) = c.models()
            except (OSError, ConnectionError):
                return ""  # not listening yet
            return str(m["version_states"].get("1", {}).get("message", ""))

        wait_until(lambda: why().startswith("load failed: "), 120, "the load failure reported")
        assert "saved_model.pb" in why()
    finally:
        assert srv.stop(signal.SIGTERM, timeout=30.0) == 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_config_error_refused_before_binding(tmp_path: Path) -> None:
    srv = ServerProcess(
        '[[models]]\nname = "m"\nbase_path = "/nonexistent/model"\n',
        workdir=str(tmp_path),
        wait_ready=False,
    )
    srv.start()
    assert srv.proc is not None
    assert srv.proc.wait(60) == 2
    assert not os.path.exists(srv.unix)


def test_second_server_on_same_socket_refused(server: ServerProcess, model_root: Path) -> None:
    other = ServerProcess(
        models_toml(model_root, ["linear"]), f'unix = "{server.unix}"', wait_ready=False
    )
    other.start()
    assert other.proc is not None
    assert other.proc.wait(60) == 4
    with Client(server.unix_url) as c:  # the first one still owns its socket
        assert c.health()["ready"]
