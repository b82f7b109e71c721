"""Lint, format and type checks run with the tests, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ["pkg", "ipc", "frontend", "runtime", "client", "bench", "tests", "perf", "setup.py"]


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_lint() -> None:
    r = run("ruff", "check", *CODE)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_format() -> None:
    r = run("ruff", "format", "--check", *CODE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    pytest.importorskip("mypy")
    r = run(sys.executable, "-m", "mypy", *[c for c in CODE if c not in ("tests", "perf")])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("folder", ["tests", "perf"])
def test_mypy_scripts(folder: str) -> None:
    """The tests and the benchmarks are checked too, each from its own folder: their
    modules import each other by bare name (conftest, benchlib), as they run. Complete
    only against an installed ringserve (as CI has): through an editable install mypy
    sees the package as Any."""
    pytest.importorskip("mypy")
    r = run(sys.executable, "-m", "mypy", ".", cwd=ROOT / folder)
    assert r.returncode == 0, r.stdout + r.stderr
