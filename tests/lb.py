"""A real HAProxy in front of real ringserve instances on this host, for the
load-balancer test (tests/test_haproxy.py) and its benchmark (perf/bench_haproxy.py).

The proxy runs configs/haproxy/ringserve.cfg itself: `render` substitutes loopback
addresses and ports, a private stats socket and shorter check intervals, and fails if
the shipped file no longer has a line it expects to substitute, so what is tested is
what is shipped.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ringserve.runtime.config import ServerConfig
from ringserve.runtime.launch import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "configs" / "haproxy" / "ringserve.cfg"
# The shipped file's ports: host ports of each ringserve, and the proxy's own.
MSGPACK, REST, METRICS, STATS = 8700, 8501, 8702, 8404
# The REST listener (`[server] http`) arrives with the HTTP layer; until then the
# REST backend's servers point at a port nobody listens on, and stay DOWN.
HAS_HTTP = "http" in ServerConfig.__dataclass_fields__


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if path is None:
        raise AssertionError(
            "the haproxy binary is needed for this test: apt-get install haproxy "
            "(.ci/run installs it where missing)"
        )
    return path


@dataclass
class Instance:
    """One ringserve on loopback, restartable on the same ports and name."""

    name: str
    models_toml: str
    extra: str = ""
    tcp: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    srv: ServerProcess | None = None

    def server_toml(self) -> str:
        http = f'http = "127.0.0.1:{self.http}"\n' if HAS_HTTP else ""
        return (
            f'name = "{self.name}"\ntcp = "127.0.0.1:{self.tcp}"\n{http}'
            f'metrics = "127.0.0.1:{self.metrics}"\n{self.extra}'
        )

    def start(self, wait: bool = True) -> ServerProcess:
        self.srv = ServerProcess(self.models_toml, self.server_toml(), wait_ready=wait)
        self.srv.start()
        return self.srv

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        srv, self.srv = self.srv, None
        if srv is None:
            return 0
        try:
            return srv.stop(sig, timeout)
        finally:
            if srv._tmp is not None:
                srv._tmp.cleanup()


def render(
    text: str,
    instances: list[Instance],
    *,
    msgpack_port: int,
    rest_port: int,
    stats_port: int,
    stats_socket: str,
    inter_ms: int = 200,
) -> str:
    """The shipped config for loopback instances: same sections, options and
    timeouts; only addresses, ports, the stats socket, check intervals and the
    process-privilege lines (user, group, chroot) differ."""
    out: list[str] = []
    section = ""
    done: set[str] = set()
    for line in text.splitlines():
        s = line.strip()
        head = s.split(None, 1)[0] if s else ""
        if head in ("global", "defaults", "frontend", "backend", "listen"):
            section = s
        if head in ("user", "group", "chroot") and section == "global":
            done.add(head)
            continue  # the test runs haproxy as whoever runs the tests
        if head == "log" and section == "global":
            done.add("log")
            line = re.sub(r"log \S+", "log stderr format raw", line)  # no syslog here
        if head == "stats" and s.startswith("stats socket "):
            line = re.sub(r"stats socket \S+", f"stats socket {stats_socket}", line)
            done.add("socket")
        elif head == "bind":
            port = int(s.rsplit(":", 1)[1])
            new = {MSGPACK: msgpack_port, REST: rest_port, STATS: stats_port}[port]
            line = re.sub(r"bind \S+", f"bind 127.0.0.1:{new}", line)
            done.add(f"bind{port}")
        elif head == "default-server":
            line = re.sub(r"\binter \S+", f"inter {inter_ms}ms", line)
            line = re.sub(r"\bfastinter \S+", f"fastinter {inter_ms // 2}ms", line)
            line = re.sub(r"\bdowninter \S+", f"downinter {inter_ms}ms", line)
            done.add("default-server")
        elif head == "server":
            port = int(s.split()[2].rsplit(":", 1)[1])
            if f"server{port}" in done:
                continue  # one line per instance, written for the first one
            done.add(f"server{port}")
            indent = line[: len(line) - len(line.lstrip())]
            for inst in instances:
                target = {MSGPACK: inst.tcp, REST: inst.http}[port]
                out.append(f"{indent}server {inst.name} 127.0.0.1:{target} port {inst.metrics}")
            continue
        out.append(line)
    want = {
        "user",
        "group",
        "chroot",
        "log",
        "socket",
        f"bind{MSGPACK}",
        f"bind{REST}",
        f"bind{STATS}",
        "default-server",
        f"server{MSGPACK}",
        f"server{REST}",
    }
    assert done == want, f"{SHIPPED} changed shape: substituted {sorted(done)}, want {sorted(want)}"
    return "\n".join(out) + "\n"


class HAProxy:
    """haproxy -db (foreground) on a rendered config; stats through its socket."""

    log: IO[bytes]

    def __init__(self, workdir: Path, instances: list[Instance], inter_ms: int = 200) -> None:
        self.dir = workdir
        self.instances = instances
        self.socket = str(workdir / "haproxy-admin.sock")
        self.inter_ms = inter_ms
        self.cfg = workdir / "haproxy.cfg"
        self._render()
        self.binary = haproxy_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    def _render(self) -> None:
        """Free ports and the config that binds them. A port free when chosen can be
        taken before HAProxy binds it (by a client's ephemeral port): `start` then
        renders again with new ones."""
        self.msgpack_port = free_port()
        self.rest_port = free_port()
        self.stats_port = free_port()
        self.cfg.write_text(
            render(
                SHIPPED.read_text(),
                self.instances,
                msgpack_port=self.msgpack_port,
                rest_port=self.rest_port,
                stats_port=self.stats_port,
                stats_socket=self.socket,
                inter_ms=self.inter_ms,
            )
        )

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.msgpack_port}"

    def check(self) -> None:
        r = subprocess.run([self.binary, "-c", "-f", str(self.cfg)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    def start(self, attempts: int = 3) -> HAProxy:
        for attempt in range(attempts):
            if attempt:
                self.log.close()
                self._render()
            self.check()
            self.log = open(self.dir / "haproxy.log", "wb")
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.cfg)],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    self.stats()
                    return self
                except OSError:
                    time.sleep(0.02)
            else:
                raise AssertionError(f"haproxy did not open its stats socket\n{self.log_text()}")
            if "Address already in use" not in self.log_text():
                raise AssertionError(f"haproxy exited at start\n{self.log_text()}")
        raise AssertionError(
            f"haproxy could not bind free ports {attempts} times\n{self.log_text()}"
        )

    def log_text(self) -> str:
        return (self.dir / "haproxy.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.log.close()

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.socket)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def stats(self) -> list[dict[str, Any]]:
        """`show stat`: one row per frontend, backend and server."""
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def servers(self, backend: str = "ringserve_msgpack") -> dict[str, dict[str, Any]]:
        return {
            r["svname"]: r
            for r in self.stats()
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, backend: str = "ringserve_msgpack") -> dict[str, str]:
        return {k: v["status"] for k, v in self.servers(backend).items()}

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
