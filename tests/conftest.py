"""Shared fixtures: test models built once per session, one real server for most tests,
and a leak check that fails the run if any process or /dev/shm object outlives it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringserve.runtime.launch import ServerProcess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def shm_entries() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if "ringserve" in e}


def ringserve_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "ringserve"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pytest" not in ln and "pgrep" not in ln]


@pytest.fixture(scope="session", autouse=True)
def no_leaks() -> Iterator[None]:
    before = shm_entries()
    procs_before = set(ringserve_processes())
    yield
    left = shm_entries() - before
    procs = [p for p in ringserve_processes() if p not in procs_before]
    assert not left, f"shared-memory objects leaked: {sorted(left)}"
    assert not procs, f"processes leaked: {procs}"


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
