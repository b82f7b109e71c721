"""Shared fixtures: test models built once per session, one real server for most tests,
and a leak check that fails the run if any process or /dev/shm object outlives it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringserve.runtime.launch import ServerProcess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def shm_entries(pid: int | None = None) -> set[str]:
    """The /dev/shm objects of this test session (of process `pid`, default this one).

    Other sessions on the host (other suites, benchmarks) create and remove theirs
    beside ours, so a name counts only when it carries the pid as one of its
    dash-separated parts, as every name the tests make does: a client region
    `ringserve-client-<pid>-<name>`, a test server's instance `ringserve-t<pid>-<port>-`
    (runtime/launch.py), the tests' own `ringserve-test-<what>-<pid>`."""
    mine = {str(pid or os.getpid()), f"t{pid or os.getpid()}"}
    return {
        e
        for e in os.listdir("/dev/shm")
        if e.startswith("ringserve-") and not mine.isdisjoint(e.split("-"))
    }


def live_groups() -> list[int]:
    """Process groups of servers this run started that still hold a process.

    A server runs in its own session; its workers share its process group."""
    out = []
    for pgid in ServerProcess.started:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        out.append(pgid)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where the request path is compiled, tests marked `sources` leave this run:
    their stand-ins (fake links, fake clocks) fail mypyc's argument type checks, so
    test_native.py runs them in an interpreter that loads the sources."""
    from ringserve import native
    from ringserve.frontend import dispatch

    if not native.is_compiled(dispatch):
        return
    gone = [it for it in items if it.get_closest_marker("sources")]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = [it for it in items if not it.get_closest_marker("sources")]


@pytest.fixture(scope="session", autouse=True)
def no_leaks() -> Iterator[None]:
    before = shm_entries()
    yield
    left = shm_entries() - before
    assert not left, f"shared-memory objects leaked: {sorted(left)}"
    # A server killed with SIGKILL by a test leaves its workers to notice the dead
    # supervisor and exit on their own, which takes them a moment: wait for that.
    deadline = time.monotonic() + 15.0
    groups = live_groups()
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)
        groups = live_groups()
    assert not groups, f"processes of these server groups outlived the tests: {groups}"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import build_all

    root = tmp_path_factory.mktemp("models")
    build_all(root)
    return root


def models_toml(root: Path, names: list[str], extra: dict[str, str] | None = None) -> str:
    out = []
    for n in names:
        out.append(f'[[models]]\nname = "{n}"\nbase_path = "{root / n}"\n')
        if extra and n in extra:
            out.append(extra[n] + "\n")
    return "\n".join(out)


@pytest.fixture(scope="session")
def server(model_root: Path) -> Iterator[ServerProcess]:
    """One server with the common models, shared by the tests that only talk to it."""
    toml = models_toml(
        model_root,
        ["linear", "ints", "strings", "slow"],
        {"slow": "max_queue = 4"},
    )
    srv = ServerProcess(toml, "ring_bytes = 4194304\nmax_frame_bytes = 8388608")
    srv.start()
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited with {code}"
    assert not os.path.exists(srv.unix), "socket file left behind"


@pytest.fixture(scope="session")
def metrics_server(model_root: Path) -> Iterator[ServerProcess]:
    """A server with the `[server] metrics` listener, shared by the metrics, Prometheus
    and `ringserve top` tests: `linear` batched (with padding) on a `gpu:0` worker,
    which on a host without a GPU runs on the CPU and must show no GPU figures."""
    from ringserve.runtime.launch import free_port

    extra = (
        '  [models.instances]\n  devices = ["gpu:0"]\n'
        "  [models.batching]\n  max_batch_size = 8\n  allowed_batch_sizes = [4, 8]\n"
    )
    port = free_port()
    srv = ServerProcess(
        models_toml(model_root, ["linear"], {"linear": extra}),
        f'metrics = "127.0.0.1:{port}"\nring_bytes = 1048576',
    )
    srv.metrics_port = port  # type: ignore[attr-defined]
    srv.start()
    yield srv
    assert srv.stop() == 0
