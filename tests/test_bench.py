"""`ringserve bench` for real: its counts against the server's own, errors by code,
shared memory and the open loop, the files it writes, and its layering."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringserve import native
from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess

FAST = ["--duration", "0.3", "--warmup", "0.1", "--no-progress"]


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringserve", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def model_counts(srv: ServerProcess, model: str) -> dict[str, Any]:
    with Client(srv.unix_url) as c:
        return c.stats()["models"][model]  # type: ignore[no-any-return]


def delta_errors(a: dict[str, Any], b: dict[str, Any]) -> dict[str, int]:
    out = {k: v - a["errors"].get(k, 0) for k, v in b["errors"].items()}
    return {k: v for k, v in out.items() if v}


def test_counts_match_the_server_and_files_are_written(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = model_counts(server, "linear")
    out = tmp_path / "run.json"
    r = bench(
        server.unix_url,
        "--model", "linear",
        "--batch-size", "3",
        "--concurrency", "1,4",
        "--echo-ceiling",
        "--json", str(out),
        "--csv", str(tmp_path / "run.csv"),
        *FAST,
    )  # fmt: skip
    after = model_counts(server, "linear")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    points = doc["points"]
    assert [p["concurrency"] for p in points] == [1, 4]
    for p in points:
        assert p["requests"] > 0 and p["errors_total"] == {} and p["lost"] == 0
        # The server counted, between readings taken by the tool, what the tool sent.
        assert p["server_requests"] == p["completed_total"], p
        assert p["server_errors"] == {}
        assert p["p50_us"] <= p["p90_us"] <= p["p99_us"] <= p["max_us"]
        assert p["rows_per_s"] == pytest.approx(3 * p["rps"])
        assert 0 < p["rps"] < 1e6
        assert p["compute_us"] > 0 and p["workers"] and p["workers"][0]["cpu_pct"] >= 0
        assert p["workers_cpu_pct"] > 0 and p["busy_pct"] > 0
    # And by the test's own readings, around the whole run.
    assert after["requests"] - before["requests"] == sum(p["completed_total"] for p in points)
    # The echo ran the same frames on the same transport, without the server.
    assert [e["transport"] for e in doc["echo"]] == ["echo unix", "echo unix"]
    assert all(e["requests"] > 0 and not e["errors"] for e in doc["echo"])
    rows = list(csv.DictReader(open(tmp_path / "run.csv")))
    assert len(rows) == 4 and rows[0]["transport"] == "unix"
    assert "p99 ms" in r.stdout and "echo unix" in r.stdout


def test_errors_are_counted_by_code_like_the_server(server: ServerProcess, tmp_path: Path) -> None:
    before = model_counts(server, "linear")
    out = tmp_path / "err.json"
    r = bench(
        server.tcp_url, "--model", "linear", "--concurrency", "2",
        "--timeout-ms", "0.001", "--json", str(out), *FAST,
    )  # fmt: skip
    after = model_counts(server, "linear")
    assert r.returncode == 1, "no successful reply must fail the run"
    (p,) = json.loads(out.read_text())["points"]
    assert p["requests"] == 0 and set(p["errors_total"]) == {"DEADLINE_EXCEEDED"}
    assert p["errors_total"] == p["server_errors"] == delta_errors(before, after)
    assert "DEADLINE_EXCEEDED" in r.stdout


def test_shared_memory_inputs_open_loop_poisson(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "shm.json"
    r = bench(
        server.unix_url, "--model", "linear", "--shm", "--rate", "300", "--poisson",
        "--outputs", "y", "--json", str(out), *FAST,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (p,) = json.loads(out.read_text())["points"]
    assert p["transport"] == "unix+shm" and p["mode"] == "open" and p["offered_rate"] == 300
    assert p["requests"] > 0 and p["errors_total"] == {}
    assert p["server_requests"] == p["completed_total"]


def test_shm_over_tcp_and_unknown_model_are_refused_clearly(server: ServerProcess) -> None:
    r = bench(server.tcp_url, "--model", "linear", "--shm", *FAST)
    assert r.returncode == 2 and "--shm needs a Unix socket" in r.stderr
    r = bench(server.unix_url, "--model", "nope", *FAST)
    assert r.returncode == 2 and "NOT_FOUND" in r.stderr


def test_plot_needs_matplotlib_and_says_how_to_install(server: ServerProcess) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from ringserve.runtime.cli import main\n"
        f"sys.exit(main(['bench', {server.unix_url!r}, '--model', 'linear', '--plot', 'x.png']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'ringserve[bench]'" in r.stderr


def test_plot_from_inputs_in_a_file(server: ServerProcess, tmp_path: Path) -> None:
    import numpy as np

    np.save(tmp_path / "x.npy", np.ones((2, 16), np.float32))
    png = tmp_path / "p.png"
    r = bench(
        server.unix_url, "--model", "linear", "--input-file", str(tmp_path / "x.npy"),
        "--concurrency", "1,2", "--plot", str(png), *FAST,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 rows a request" in r.stderr


def test_bench_sits_on_client_and_ipc_only() -> None:
    code = (
        "import sys, ringserve.bench, ringserve.bench.cli, ringserve.bench.runner, "
        "ringserve.bench.echo\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ringserve', 'tensorflow'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    mods = eval(out.stdout)
    top = native.TOP_MODULES
    assert all(m.split(".")[1] in ("bench", "client", "ipc") for m in mods if m not in top), mods
