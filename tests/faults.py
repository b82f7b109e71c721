"""Helpers for the fault tests (test_supervision.py, test_systemd.py): a real server
whose log is captured line by line with arrival times, polling with deadlines,
pipelined requests, and the processes and /dev/shm objects a server owns."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from ringserve.client import Client
from ringserve.client.common import infer_request
from ringserve.runtime.launch import ServerProcess

T = TypeVar("T")

# The "slow" test model runs about 200k loop iterations per second on this machine
# (measured: n = 100000 takes ~0.47 s alone). Durations below are rough on purpose:
# the tests synchronise on observed state, never on these numbers.
ITERS_PER_SECOND = 200_000
FOREVER = 2_000_000_000  # far longer than any test


def slow_inputs(seconds: float = 0.0, n: int | None = None) -> dict[str, np.ndarray]:
    iters = int(seconds * ITERS_PER_SECOND) if n is None else n
    return {"x": np.ones((1, 4), np.float32), "n": np.array(iters, np.int32)}


def linear_inputs() -> dict[str, np.ndarray]:
    return {"x": np.ones((2, 16), np.float32)}


class LoggedServer(ServerProcess):
    """A ServerProcess whose stderr (supervisor and workers) is read by a thread and
    kept as (monotonic time, line) pairs, so tests can wait for and time log lines."""

    def __init__(
        self, models_toml: str, server_toml: str = "", *, wait: bool = True, **kw: Any
    ) -> None:
        super().__init__(models_toml, server_toml, wait_ready=wait, stderr=subprocess.PIPE, **kw)
        self.lines: list[tuple[float, str]] = []
        self._reader: threading.Thread | None = None

    def _started(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def wait_ready(self, timeout: float | None = None) -> None:
        try:
            super().wait_ready(timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        code = super().stop(sig, timeout)
        if self._reader is not None:
            self._reader.join(10.0)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    # ---- log -----------------------------------------------------------------------
    def log(self, last: int = 80) -> str:
        return "\n".join(line for _, line in self.lines[-last:])

    def grep(self, text: str) -> list[tuple[float, str]]:
        return [(t, line) for t, line in list(self.lines) if text in line]

    def wait_log(self, text: str, timeout: float = 30.0, count: int = 1) -> list[tuple[float, str]]:
        return wait_for(
            lambda: (hits := self.grep(text)) and len(hits) >= count and hits,
            timeout,
            f"{count} log line(s) containing {text!r}",
            self,
        )

    # ---- state ---------------------------------------------------------------------
    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.unix_url, timeout=timeout)

    def workers(self, model: str | None = None) -> list[dict[str, Any]]:
        with self.client() as c:
            ws = c.stats()["workers"]
        return [w for w in ws if model is None or w["model"] == model]


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll `cond` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_for(
    cond: Callable[[], T | bool | None],
    timeout: float,
    what: str,
    srv: LoggedServer | None = None,
    interval: float = 0.02,
) -> T:
    """Poll `cond` until it returns something truthy (returned); fail past `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = cond()
            if value:
                return value  # type: ignore[return-value]
        except (OSError, ConnectionError) as exc:  # a server restarting its listener
            last_exc = exc
        if time.monotonic() > deadline:
            log = f"\n--- server log ---\n{srv.log()}" if srv is not None else ""
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}{log}")
        time.sleep(interval)


def send_many(c: Client, model: str, inputs: list[dict[str, Any]]) -> list[int]:
    """Pipeline requests on one connection; return their ids."""
    return [c.send(infer_request(model, x, None, None, None, None)) for x in inputs]


def collect(c: Client, ids: list[int]) -> dict[int, tuple[float, dict[str, Any]]]:
    """Read until every id has its reply; (arrival time, reply) per id. The client's
    socket timeout bounds each read, so a missing reply fails the test."""
    got: dict[int, tuple[float, dict[str, Any]]] = {}
    while len(got) < len(ids):
        msg = c.recv()
        got[msg["id"]] = (time.monotonic(), msg)
    return got


def code_of(reply: dict[str, Any]) -> str:
    return "OK" if reply.get("ok") else str(reply["error"]["code"])


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def shm_of(name: str) -> set[str]:
    """/dev/shm objects of one server instance (names begin ringserve-<name>-)."""
    return {e for e in os.listdir("/dev/shm") if f"ringserve-{name}-" in e}


def ready(srv: ServerProcess) -> bool:
    with Client(srv.unix_url, timeout=10.0) as c:
        return bool(c.health()["ready"])


# ---- reaching into a worker's rings ---------------------------------------------------
def worker_spec(pid: int) -> dict[str, Any]:
    """The spec a worker was started with (its ring and eventfd numbers)."""
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    raw = next(e for e in env if e.startswith(b"RINGSERVE_WORKER_SPEC="))
    return json.loads(raw.split(b"=", 1)[1])  # type: ignore[no-any-return]


def take_fd(pid: int, fd: int) -> int:
    """A duplicate of another process's fd (pidfd_getfd, Linux 5.6+; needs the rights
    to ptrace it): what that process could do with the fd, this test can do."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        return int(got)
    finally:
        os.close(pidfd)


SYS_PIDFD_GETFD = 438  # x86-64
