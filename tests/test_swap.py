"""A version swap with count > 1 under load: the old version keeps its workers until the
new one has its full count, and no request fails."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import numpy as np

from ringserve.client import Client

from faults import LoggedServer, wait_for


def toml(root: Path, version: int, extra: str = "") -> str:
    return (
        f'[[models]]\nname = "linear2"\nbase_path = "{root / "linear2"}"\n'
        f"version_policy = {{specific = [{version}]}}\n{extra}"
        "  [models.instances]\n  count = 2\n"
    )


class Load:
    def __init__(self, url: str, n: int = 4) -> None:
        self.halt = threading.Event()
        self.ok = 0
        self.versions: set[int] = set()
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(url,), daemon=True) for _ in range(n)
        ]
        for t in self.threads:
            t.start()

    def _run(self, url: str) -> None:
        x = np.ones((2, 16), np.float32)
        with Client(url, timeout=60) as c:
            while not self.halt.is_set():
                try:
                    r = c.call(
                        "infer",
                        model="linear2",
                        inputs={"x": {"dtype": "float32", "shape": [2, 16], "data": x.tobytes()}},
                    )
                    self.versions.add(r["version"])
                    self.ok += 1
                except Exception as exc:  # counted, the test fails on any
                    self.errors.append(repr(exc))

    def finish(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(60)


def test_swap_keeps_old_version_until_new_has_full_count(model_root: Path) -> None:
    with LoggedServer(toml(model_root, 1), "ring_bytes = 1048576") as srv:
        load = Load(srv.unix_url)
        try:
            wait_for(lambda: load.ok > 20, 30, "load running", srv)
            server = srv.config_path.read_text().split("[[models]]")[0]
            srv.config_path.write_text(server + toml(model_root, 2))
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGHUP)
            unloaded = srv.wait_log("model linear2: version 1 unloaded", timeout=120)
            at = load.ok
            wait_for(lambda: load.ok > at + 20, 30, "load served by version 2", srv)
        finally:
            load.finish()
        assert load.errors == [], load.errors[:5]
        assert load.versions == {1, 2}
        ready2 = [t for t, line in srv.grep("worker linear2/2/") if " ready: " in line]
        assert len(ready2) == 2, srv.log()
        (unloading,) = [t for t, _ in srv.grep("model linear2: unloading version 1")]
        # The old version started to go only after the second new worker served.
        assert unloading >= max(ready2), srv.log()
        assert unloaded[0][0] >= unloading
        assert srv.stop() == 0
