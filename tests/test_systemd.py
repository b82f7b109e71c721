"""systemd integration for real: the notify protocol on a datagram socket bound here,
socket activation with listening sockets made here and passed as fds 3 and 4, and the
deployment files in configs/ (units verified by systemd-analyze when installed)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ringserve.client import Client
from ringserve.runtime import config, systemd

from conftest import models_toml
from faults import LoggedServer, linear_inputs, wait_for

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "configs" / "systemd"
EXAMPLE = ROOT / "configs" / "ringserve.toml"
SMALL_RINGS = "ring_bytes = 1048576"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX addresses are limited to 107 bytes."""
    d = tempfile.mkdtemp(prefix="rs-sd-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class NotifyListener:
    """What systemd's side of $NOTIFY_SOCKET sees: one datagram per notify call."""

    def __init__(self, path: Path, on_message: Callable[[list[str]], None] | None = None):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, list[str]]] = []
        self.on_message = on_message
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            t = time.monotonic()
            lines = data.decode().split("\n")
            # The callback first: whoever waits for this message then sees its effects.
            if self.on_message is not None:
                self.on_message(lines)
            self.messages.append((t, lines))

    def having(self, line: str, after: float = 0.0) -> list[tuple[float, list[str]]]:
        return [(t, m) for t, m in list(self.messages) if line in m and t >= after]

    def wait(self, line: str, timeout: float, after: float = 0.0) -> tuple[float, list[str]]:
        def first() -> tuple[float, list[str]] | None:
            hits = self.having(line, after)
            return hits[0] if hits else None

        return wait_for(
            first,
            timeout,
            f"a notify message with {line!r}; got {[m for _, m in self.messages][-10:]}",
        )

    def close(self) -> None:
        self._halt.set()
        self._thread.join(5)
        self.sock.close()
        os.unlink(self.path)


def systemd_env(srv: LoggedServer, **env: str) -> None:
    """Exactly what the test sets: nothing from the environment pytest runs in."""
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS"):
        srv.env.pop(k, None)
    srv.env.update(env)


# ---- notify ---------------------------------------------------------------------------
def test_notify_ready_reloading_stopping_and_watchdog(model_root: Path, short_dir: Path) -> None:
    seen_at_ready: list[dict[str, Any]] = []
    srv = LoggedServer(models_toml(model_root, ["linear", "strings"]), SMALL_RINGS, wait=False)

    def on_message(lines: list[str]) -> None:
        if "READY=1" in lines and not seen_at_ready:
            with Client(srv.unix_url, timeout=10) as c:  # what a client sees right then
                seen_at_ready.append({"health": c.health(), "models": c.models()})

    listener = NotifyListener(short_dir / "notify", on_message)
    systemd_env(srv, NOTIFY_SOCKET=listener.path, WATCHDOG_USEC="200000")
    try:
        with srv:
            last_not_ready = time.monotonic()

            def is_ready() -> bool:
                nonlocal last_not_ready
                with Client(srv.unix_url, timeout=10) as c:
                    if c.health()["ready"]:
                        return True
                last_not_ready = time.monotonic()
                return False

            wait_for(is_ready, 180, "ready", srv)
            t_ready, ready_msg = listener.wait("READY=1", 30)
            # READY=1 only once every model serves, never while a client saw not ready.
            assert t_ready >= last_not_ready
            assert seen_at_ready[0]["health"]["ready"] is True
            assert {m["name"]: m["state"] for m in seen_at_ready[0]["models"]} == {
                "linear": "AVAILABLE",
                "strings": "AVAILABLE",
            }
            assert "STATUS=serving" in ready_msg
            first = listener.having("STATUS=loading models")
            assert first and first[0][0] < t_ready
            assert len(listener.having("READY=1")) == 1
            with Client(srv.unix_url) as c:
                c.infer("linear", linear_inputs())

            # A reload: RELOADING=1 with the monotonic time, then READY=1 again.
            t_hup = time.monotonic()
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGHUP)
            t_rl, rl = listener.wait("RELOADING=1", 30, after=t_hup)
            usec = next(int(x.split("=", 1)[1]) for x in rl if x.startswith("MONOTONIC_USEC="))
            assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
            t_back, _ = listener.wait("READY=1", 30, after=t_rl)
            assert t_back >= t_rl
            srv.wait_log("reloaded")

            # The watchdog: WATCHDOG_USEC / 2 = every 0.1 s, from the start on.
            pings = wait_for(
                lambda: (w := listener.having("WATCHDOG=1")) and len(w) >= 10 and w,
                30,
                "10 watchdog pings",
                srv,
            )
            gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(pings))
            assert gaps[len(gaps) // 2] < 0.5, gaps

            t_term = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            t_stop, stop_msg = listener.wait("STOPPING=1", 30, after=t_term)
            assert "STATUS=stopping" in stop_msg
            assert srv.proc.wait(60) == 0
            assert not listener.having("READY=1", after=t_stop)
    finally:
        listener.close()


# ---- socket activation ----------------------------------------------------------------
# What systemd does for the service: the sockets at fds 3.., LISTEN_FDS, and
# LISTEN_PID = the pid of the process that runs the server (known only inside it).
WRAPPER = """
import fcntl, os, sys
tmp = [fcntl.fcntl(int(a), fcntl.F_DUPFD_CLOEXEC, 100) for a in sys.argv[1:3]]
for a in sys.argv[1:3]:
    os.close(int(a))
for target, fd in enumerate(tmp, start=3):
    os.dup2(fd, target)
    os.close(fd)
pid = str(os.getpid())
os.environ.update(LISTEN_PID=pid, LISTEN_FDS="2", LISTEN_FDNAMES="tcp:unix", WATCHDOG_PID=pid)
from ringserve.runtime.cli import main
sys.exit(main(["serve", "--config", sys.argv[3]]))
"""


class ActivatedServer(LoggedServer):
    def __init__(self, *a: Any, fds: tuple[int, int], **kw: Any) -> None:
        super().__init__(*a, pass_fds=fds, **kw)
        self.fds = fds

    def argv(self) -> list[str]:
        return [sys.executable, "-c", WRAPPER, *map(str, self.fds), str(self.config_path)]


def test_socket_activation_serves_inherited_sockets(model_root: Path, short_dir: Path) -> None:
    tcp = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = tcp.getsockname()[1]
    path = str(short_dir / "activated.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(128)
    inode = os.stat(path).st_ino
    listener = NotifyListener(short_dir / "notify")
    srv = ActivatedServer(
        models_toml(model_root, ["linear"]),
        f'{SMALL_RINGS}\ntcp = "127.0.0.1:{port}"\nunix = "{path}"',
        fds=(tcp.fileno(), unix.fileno()),
    )
    srv.port = port
    systemd_env(srv, NOTIFY_SOCKET=listener.path, WATCHDOG_USEC="200000")
    try:
        with srv:
            # The configured port is taken (by this test): serving at all means the
            # inherited socket is used, not a fresh bind.
            for url in (srv.tcp_url, srv.unix_url):
                with Client(url) as c:
                    out = c.infer("linear", linear_inputs())
                    assert out["y"].shape == (2, 4)
                    assert c.health()["ready"]
            assert os.stat(path).st_ino == inode, "the inherited socket file was replaced"
            assert srv.grep(f"'tcp': '127.0.0.1:{port}'") and srv.grep(f"'unix': '{path}'")
            # WATCHDOG_PID names this very process: the watchdog runs.
            wait_for(lambda: len(listener.having("WATCHDOG=1")) >= 3, 30, "watchdog", srv)
            listener.wait("READY=1", 30)
            assert srv.stop() == 0
        # The socket belongs to whoever passed it (the .socket unit): not unlinked.
        assert os.path.exists(path) and os.stat(path).st_ino == inode
    finally:
        srv.stop(signal.SIGKILL)
        listener.close()
        tcp.close()
        unix.close()
        if os.path.exists(path):
            os.unlink(path)


LISTEN_PROBE = """
import os, socket, sys
pad = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]  # fd 3 is not the socket's
s = socket.create_server(("127.0.0.1", 0))
os.dup2(s.fileno(), 3)  # inheritable, as systemd passes it
os.environ["LISTEN_FDS"] = "1"
if sys.argv[1] == "self":
    os.environ["LISTEN_PID"] = str(os.getpid())
elif sys.argv[1] == "other":
    os.environ["LISTEN_PID"] = str(os.getppid())
from ringserve.runtime import systemd
got = systemd.listen_sockets()
print(len(got))
print(all(g.getsockname() == s.getsockname() for g in got))
print(sorted(k for k in os.environ if k.startswith("LISTEN_")))
print(os.get_inheritable(3))
"""


@pytest.mark.parametrize(
    "listen_pid, expected",
    [
        ("self", "1\nTrue\n[]\nFalse"),
        ("other", "0\nTrue\n[]\nTrue"),
        ("unset", "0\nTrue\n[]\nTrue"),
    ],
    ids=["self", "other", "unset"],
)
def test_listen_sockets_only_for_this_pid(listen_pid: str, expected: str) -> None:
    """sd_listen_fds(3): the fds are ours only when LISTEN_PID is set and names us; the
    variables are cleared either way so children never take them for their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    r = subprocess.run(
        [sys.executable, "-c", LISTEN_PROBE, listen_pid],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_watchdog_only_for_the_named_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    assert systemd.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", str(os.getppid()))
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval() is None


def test_notify_without_a_socket_is_harmless(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "nobody-listens"))
    assert systemd.notify("READY=1") is False
    listener = NotifyListener(short_dir / "n")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        assert systemd.notify("READY=1", "STATUS=x") is True
        assert listener.wait("STATUS=x", 10)[1] == ["READY=1", "STATUS=x"]
    finally:
        listener.close()


# ---- deployment files -----------------------------------------------------------------
def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as section -> [(key, value)] (keys may repeat)."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, [])
            continue
        k, _, v = line.partition("=")
        out[section].append((k.strip(), v.strip()))
    return out


def values(u: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in u.get(section, []) if k == key]


def one(u: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    vs = values(u, section, key)
    assert len(vs) == 1, f"[{section}] {key}: {vs}"
    return vs[0]


def seconds(v: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    for suffix in sorted(units, key=len, reverse=True):
        if v.endswith(suffix):
            return float(v[: -len(suffix)]) * units[suffix]
    return float(v)


def test_units_agree_with_the_example_config() -> None:
    svc = unit(UNITS / "ringserve.service")
    sock = unit(UNITS / "ringserve.socket")
    cfg = tomllib.loads(EXAMPLE.read_text())
    s = "Service"
    assert one(svc, s, "Type") == "notify"
    assert one(svc, s, "NotifyAccess") == "main"  # only the supervisor notifies
    start = one(svc, s, "ExecStart").split()
    assert Path(start[0]).name == "ringserve"
    assert start[1:] == ["serve", "--config", "/etc/ringserve/ringserve.toml"]
    assert "/bin/kill -HUP $MAINPID" in values(svc, s, "ExecReload")
    assert one(svc, s, "KillMode") == "mixed"
    grace = cfg["server"]["grace_seconds"] + cfg["server"].get("drain_delay_seconds", 0.0)
    assert seconds(one(svc, s, "TimeoutStopSec")) > grace + 5
    assert seconds(one(svc, s, "WatchdogSec")) > 0
    assert one(svc, s, "User") == one(svc, s, "Group") == "ringserve"
    assert one(svc, s, "RuntimeDirectory") == "ringserve"
    assert one(svc, s, "ProtectSystem") == "strict"
    assert one(svc, s, "NoNewPrivileges") == "yes"
    assert one(svc, s, "PrivateTmp") == "yes"
    # The rings live in the host's /dev/shm: nothing may hide it.
    assert values(svc, s, "PrivateDevices") in ([], ["no"])
    assert values(svc, s, "PrivateIPC") in ([], ["no"])
    unix, tcp = cfg["server"]["unix"], cfg["server"]["tcp"]
    assert Path(unix).parent == Path("/run/ringserve")
    assert sorted(values(sock, "Socket", "ListenStream")) == sorted([unix, tcp])
    assert values(sock, "Socket", "Service") in ([], ["ringserve.service"])
    assert one(sock, "Socket", "SocketUser") == "ringserve"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at this checkout's
    # entry point instead of the install location the unit names.
    stub = tmp_path / "bin" / "ringserve"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\nexec {sys.executable} -m ringserve "$@"\n')
    stub.chmod(0o755)
    for name in ("ringserve.service", "ringserve.socket"):
        text = (UNITS / name).read_text().replace("/usr/local/bin/ringserve", str(stub))
        (tmp_path / name).write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "ringserve.service", "ringserve.socket"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Unknown keys and bad values are only warnings: none may mention our units.
    assert "ringserve" not in out, out


def test_example_config_uses_every_key_and_validates(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    server = raw["server"]
    assert set(config.ServerConfig.__dataclass_fields__) <= set(server), set(
        config.ServerConfig.__dataclass_fields__
    ) - set(server)
    documented = {
        "models": {"name", "base_path", "version_policy", "instances", "batching"},
        "instances": {"count", "devices", "intra_op_threads", "inter_op_threads", "cpu_affinity"},
        "batching": {"max_batch_size", "batch_timeout_us", "allowed_batch_sizes", "max_queue"},
    }
    models = raw["models"]
    assert documented["models"] <= set().union(*map(set, models))
    assert documented["instances"] <= set().union(*(m.get("instances", {}) for m in models))
    assert documented["batching"] <= set().union(*(m.get("batching", {}) for m in models))
    # Valid as written once its model folders exist (and CPUs, on a small machine).
    for i, m in enumerate(models):
        base = tmp_path / f"m{i}"
        (base / "1").mkdir(parents=True)
        m["base_path"] = str(base)
        inst = m.get("instances", {})
        ncpu = os.cpu_count() or 1
        if inst.get("cpu_affinity"):
            inst["cpu_affinity"] = [[c % ncpu for c in cpus] for cpus in inst["cpu_affinity"]]
    if server.get("auth_token_file"):
        token = tmp_path / "token"
        token.write_text("secret\n")
        server["auth_token_file"] = str(token)
    cfg = config.parse(raw, str(EXAMPLE))
    assert cfg.server.unix == "/run/ringserve/ringserve.sock"
    assert cfg.server.grace_seconds < 45
