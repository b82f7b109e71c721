"""Start a real server as a child process and wait for it: for the demo, the tests,
the benchmarks, and anyone's own integration tests.

    with ServerProcess(config_text) as srv:
        Client(srv.unix_url).infer(...)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    started: list[int] = []  # process-group ids of every server started here (leak checks)

    """`server_toml` is the [server] table body; `models_toml` the [[models]] tables.

    tcp, unix and a unique server name are filled in unless given.
    """

    def __init__(
        self,
        models_toml: str,
        server_toml: str = "",
        *,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 180.0,
        wait_ready: bool = True,
        pass_fds: tuple[int, ...] = (),
        stderr: Any = None,
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="ringserve-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self.unix = str(self.dir / "ringserve.sock")
        self.name = f"t{os.getpid()}-{self.port}"
        lines = server_toml.strip().splitlines()
        keys = {ln.split("=")[0].strip() for ln in lines if "=" in ln}
        if "tcp" not in keys:
            lines.append(f'tcp = "127.0.0.1:{self.port}"')
        if "unix" not in keys:
            lines.append(f'unix = "{self.unix}"')
        else:
            self.unix = next(
                ln.split("=", 1)[1].strip().strip('"') for ln in lines if ln.startswith("unix")
            )
        if "name" not in keys:
            lines.append(f'name = "{self.name}"')
        else:
            self.name = next(
                ln.split("=", 1)[1].strip().strip('"')
                for ln in lines
                if ln.split("=")[0].strip() == "name"
            )
        self.config_path = self.dir / "server.toml"
        self.config_path.write_text("[server]\n" + "\n".join(lines) + "\n\n" + models_toml)
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self._wait_ready = wait_ready
        self.pass_fds = pass_fds
        self.stderr = stderr
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix}"

    def argv(self) -> list[str]:
        """The command that starts the server (a subclass may wrap it)."""
        return [sys.executable, "-m", "ringserve", "serve", "--config", str(self.config_path)]

    def _started(self) -> None:
        """Called once the process exists, before waiting for it to be ready."""

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            self.argv(),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stderr=self.stderr,
            pass_fds=self.pass_fds,
            start_new_session=True,
        )
        ServerProcess.started.append(self.proc.pid)
        self._started()
        if self._wait_ready:
            try:
                self.wait_ready()
            except BaseException:
                self.stop(signal.SIGKILL)
                raise
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        from ringserve.client import Client, RingserveError

        deadline = time.monotonic() + (timeout or self.ready_timeout)
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} before ready")
            try:
                with Client(self.unix_url, timeout=5.0) as c:
                    if c.health().get("ready"):
                        return
            except (OSError, RingserveError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"server not ready within {timeout or self.ready_timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it; kill the whole group past `timeout`."""
        p = self.proc
        if p is None:
            return 0
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        try:  # nothing of its group may outlive it
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return int(p.returncode)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
