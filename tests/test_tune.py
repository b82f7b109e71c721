"""`ringserve tune` for real on a small model: a tiny grid, interrupted with Ctrl-C
after two candidates; the best so far is written, checks and serves."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess

FAST = ["--concurrency", "1,2", "--duration", "0.2", "--warmup", "0.05", "--no-progress"]


def tune_processes() -> list[int]:
    """Servers a tune run started (their config lives in its temporary folder)."""
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                cmd = Path(f"/proc/{e}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ringserve-tune-" in cmd:
                out.append(int(e))
    return out


def lines_of(stream: object) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line)
        q.put("")

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_tune_ctrl_c_keeps_the_best_so_far_which_checks_and_serves(
    model_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "best.toml"
    p = subprocess.Popen(
        [
            sys.executable, "-m", "ringserve", "tune", "--model-path", str(model_root / "linear"),
            "--cores", "1", "--no-pinning", "--max-batch-sizes", "4,8,16,32",
            "--budget-minutes", "5", "--output", str(out), *FAST,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    err = lines_of(p.stderr)
    seen: list[str] = []
    deadline = time.monotonic() + 150
    try:
        while sum(1 for ln in seen if ln.startswith("  score ")) < 2:
            line = err.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line, "tune ended before two candidates:\n" + "".join(seen)
            seen.append(line)
        p.send_signal(signal.SIGINT)
        stdout, _ = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, "".join(seen)
    assert "interrupted" in stdout and "best:" in stdout
    table = stdout.split("best:")[0]
    ranked = [ln for ln in table.splitlines() if re.match(r"^\d+ ", ln)]
    assert len(ranked) >= 2 and all("req/s" in ln for ln in ranked[:2]), stdout
    assert not tune_processes(), "a server of the tune run outlived it"
    # The winning block checks and serves.
    check = subprocess.run(
        [sys.executable, "-m", "ringserve", "check-config", str(out)], capture_output=True
    )
    assert check.returncode == 0, check.stderr
    text = out.read_text()
    assert text.startswith("# ringserve tune") and 'name = "linear"' in text
    with ServerProcess(text) as srv, Client(srv.unix_url) as c:
        y = c.infer("linear", {"x": np.ones((1, 16), np.float32)})["y"]
        assert y.shape == (1, 4)
