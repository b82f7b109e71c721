"""The soak's traffic (perf/soak.py): the client threads that send valid, invalid and
hostile requests and the chaos (worker kills, reloads), and the tally of what came back.
Every valid answer is checked against TensorFlow's for the same rows."""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import inproc
import msgpack
import numpy as np
import posix_ipc

from ringserve.client import Client, SharedRegion
from ringserve.client.common import infer_request
from ringserve.ipc import framereader, wire
from ringserve.runtime.launch import ServerProcess

BANK_ROWS = 64
WIDTH = {"linear": 16, "demo": 784}
MAX_FRAME = 8 << 20
REPLY_TIMEOUT = 60.0


def config(models: dict[str, Path], timeout_us: int) -> str:
    return f"""
[[models]]
name = "linear"
base_path = "{inproc.model_base(models["linear"])}"
  [models.instances]
  count = 2
  [models.batching]
  max_batch_size = 16
  batch_timeout_us = {timeout_us}

[[models]]
name = "demo"
base_path = "{inproc.model_base(models["demo"])}"
"""


class Tally:
    """Outcome counters shared by the traffic threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.c: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, key: str, n: int = 1, note: str | None = None) -> None:
        with self.lock:
            self.c[key] += n
            if note and len(self.notes) < 50:
                self.notes.append(f"{key}: {note}"[:300])


class Soak:
    def __init__(self, args: argparse.Namespace, srv: ServerProcess, bank: dict, ref: dict):
        self.args = args
        self.srv = srv
        self.bank = bank
        self.ref = ref
        self.t = Tally()
        self.halt = threading.Event()
        self.rng = random.Random(args.seed)

    # ---- helpers ---------------------------------------------------------------------
    def pick(self, rng: random.Random) -> tuple[str, int, int]:
        model = rng.choice(("linear", "linear", "demo"))
        rows = rng.randint(1, 8)
        start = rng.randint(0, BANK_ROWS - rows)
        return model, start, rows

    def check(
        self,
        model: str,
        start: int,
        rows: int,
        reply: dict[str, Any],
        outs: dict[str, np.ndarray] | None = None,
    ) -> None:
        if not reply.get("ok"):
            code = reply.get("error", {}).get("code")
            if code == "UNAVAILABLE":
                self.t.add("valid_unavailable")
            else:
                self.t.add("valid_other_error", note=str(reply.get("error"))[:200])
            return
        if outs is None:
            outs = {
                k: np.frombuffer(t["data"], np.dtype(t["dtype"])).reshape(t["shape"])
                for k, t in reply["outputs"].items()
            }
        want = self.ref[model]
        for k, w in want.items():
            got = outs.get(k)
            if (
                got is None
                or got.shape != (rows, *w.shape[1:])
                or not np.allclose(got, w[start : start + rows], rtol=1e-4, atol=1e-5)
            ):
                self.t.add("wrong", note=f"{model}[{start}:{start + rows}] output {k}")
                return
        self.t.add("valid_ok")

    def url(self, rng: random.Random) -> str:
        return self.srv.unix_url if rng.random() < 0.6 else self.srv.tcp_url

    # ---- traffic ---------------------------------------------------------------------
    def valid(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.halt.is_set():
            try:
                with Client(self.url(rng), timeout=REPLY_TIMEOUT) as c:
                    for _ in range(rng.randint(10, 60)):
                        if self.halt.is_set():
                            break
                        sent = []
                        for _ in range(rng.randint(1, 4)):
                            model, start, rows = self.pick(rng)
                            x = self.bank[model][start : start + rows]
                            rid = c.send(infer_request(model, {"x": x}, None, None, None, None))
                            sent.append((rid, model, start, rows))
                            self.t.add("valid_sent")
                        for rid, model, start, rows in sent:
                            try:
                                reply = c.recv(rid)
                            except (OSError, ConnectionError) as exc:
                                self.t.add("no_reply", note=f"valid {model}: {exc!r}")
                                continue
                            self.check(model, start, rows, reply)
            except (OSError, ConnectionError) as exc:
                self.t.add("connect_error", note=repr(exc))
                time.sleep(0.2)

    def shm(self, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not self.halt.is_set():
            region = SharedRegion.create(
                f"soak{seed}", 1 << 20, key=f"/ringserve-soak-{os.getpid()}-{seed}"
            )
            try:
                with Client(self.srv.unix_url, timeout=REPLY_TIMEOUT) as c:
                    c.shm_register(region)
                    for _ in range(rng.randint(20, 80)):
                        if self.halt.is_set():
                            break
                        n += 1
                        if n % 25 == 0:
                            self.truncated(c, seed)
                        model, start, rows = self.pick(rng)
                        x = region.array((rows, WIDTH[model]), "float32", offset=0)
                        x[:] = self.bank[model][start : start + rows]
                        outs = {
                            k: region.ref(512 * 1024 + i * 65536, 65536)
                            for i, k in enumerate(sorted(self.ref[model]))
                        }
                        req = infer_request(
                            model, {"x": region.tensor(x)}, None, None, None, None, outs
                        )
                        self.t.add("valid_sent")
                        try:
                            reply = c.recv(c.send(req))
                        except (OSError, ConnectionError) as exc:
                            self.t.add("no_reply", note=f"shm: {exc!r}")
                            continue
                        got = None
                        if reply.get("ok"):
                            got = {k: region.read(t).copy() for k, t in reply["outputs"].items()}
                        self.check(model, start, rows, reply, got)
                    c.shm_unregister(region)
            except (OSError, ConnectionError) as exc:
                self.t.add("connect_error", note=repr(exc))
                time.sleep(0.2)
            finally:
                region.close()
                region.unlink()

    def truncated(self, c: Client, seed: int) -> None:
        """A second region, shrunk to nothing under the server, then read by an infer."""
        key = f"/ringserve-soak-trunc-{os.getpid()}-{seed}"
        shm = posix_ipc.SharedMemory(key, posix_ipc.O_CREX, mode=0o600, size=65536)
        try:
            c.call("shm_register", name="trunc", key=key, size=65536)
            os.ftruncate(shm.fd, 0)
            t = {
                "dtype": "float32",
                "shape": [1, 16],
                "shm": {"region": "trunc", "offset": 0, "size": 64},
            }
            self.t.add("trunc_sent")
            reply = c.recv(c.send({"op": "infer", "model": "linear", "inputs": {"x": t}}))
            self.t.add(
                "trunc_answered" if not reply.get("ok") else "wrong",
                note=None if not reply.get("ok") else "truncated region answered OK",
            )
            c.call("shm_unregister", name="trunc")
        finally:
            shm.close_fd()
            shm.unlink()

    def invalid(self, seed: int) -> None:
        rng = random.Random(seed)
        x16 = np.zeros((1, 16), np.float32).tobytes()
        cases: list[dict[str, Any]] = [
            {"op": "infer", "model": "nope", "inputs": {}},
            {
                "op": "infer",
                "model": "linear",
                "inputs": {"x": {"dtype": "int32", "shape": [1, 4], "data": bytes(16)}},
            },
            {
                "op": "infer",
                "model": "linear",
                "inputs": {"x": {"dtype": "float32", "shape": [1, 15], "data": bytes(60)}},
            },
            {"op": "infer", "model": "linear", "inputs": {}},
            {
                "op": "infer",
                "model": "linear",
                "inputs": {"x": {"dtype": "float32", "shape": [1] * 100, "data": x16}},
            },
            {
                "op": "infer",
                "model": "linear",
                "inputs": {"x": {"dtype": "float32", "shape": [2**40, 16], "data": x16}},
            },
            {
                "op": "infer",
                "model": "demo",
                "inputs": {"x": {"dtype": "float32", "shape": [1, 784], "data": x16}},
            },
            {"op": "nope"},
        ]
        while not self.halt.is_set():
            try:
                with Client(self.url(rng), timeout=REPLY_TIMEOUT) as c:
                    for _ in range(rng.randint(5, 30)):
                        if self.halt.is_set():
                            break
                        self.t.add("invalid_sent")
                        if rng.random() < 0.15:
                            body = msgpack.packb([1, 2, 3])  # not a map
                            c.send_raw(struct.pack(">I", len(body)) + body)
                            rid = None
                        else:
                            rid = c.send(dict(rng.choice(cases)))
                        try:
                            reply = c.recv(rid)
                        except (OSError, ConnectionError) as exc:
                            self.t.add("no_reply", note=f"invalid: {exc!r}")
                            break
                        if reply.get("ok"):
                            self.t.add("wrong", note="an invalid request answered OK")
                        else:
                            self.t.add("invalid_answered")
                        time.sleep(rng.random() * 0.01)
            except (OSError, ConnectionError) as exc:
                self.t.add("connect_error", note=repr(exc))
                time.sleep(0.2)

    def hostile(self, seed: int) -> None:
        rng = random.Random(seed)
        good = wire.pack(
            {
                "id": 7,
                "op": "infer",
                "model": "linear",
                "inputs": {"x": {"dtype": "float32", "shape": [1, 16], "data": bytes(64)}},
            }
        )
        while not self.halt.is_set():
            kind = rng.choice(("oversize", "garbage", "slow", "noread", "close"))
            addr = self.url(rng)
            try:
                s = raw_socket(addr)
            except OSError as exc:
                self.t.add("connect_error", note=repr(exc))
                time.sleep(0.2)
                continue
            try:
                s.settimeout(REPLY_TIMEOUT)
                if kind == "oversize":
                    s.sendall(struct.pack(">I", MAX_FRAME + 1024))
                    read_until_close(s)
                elif kind == "garbage":
                    body = rng.randbytes(rng.randint(1, 200))
                    s.sendall(struct.pack(">I", len(body)) + body)
                    s.sendall(good)  # the framing is intact: still served after the error
                    read_until_close(s, stop_after_id=7)
                elif kind == "slow":
                    s.sendall(good[:10])
                    time.sleep(0.3)
                    s.sendall(good[10:])
                    ok = read_until_close(s, stop_after_id=7)
                    self.t.add(
                        "slow_answered" if ok else "no_reply",
                        note=None if ok else "slow frame never answered",
                    )
                elif kind == "noread":
                    s.sendall(good * 50)
                elif kind == "close":
                    pass
                self.t.add(f"hostile_{kind}")
            except OSError:
                self.t.add(f"hostile_{kind}")
            finally:
                s.close()
            time.sleep(rng.random() * 0.05)

    def chaos(self) -> None:
        rng = random.Random(self.args.seed + 99)
        next_kill = time.monotonic() + self.args.kill_every
        next_reload = time.monotonic() + self.args.reload_every
        flip = False
        while not self.halt.wait(0.2):
            now = time.monotonic()
            if now >= next_kill:
                next_kill = now + self.args.kill_every
                try:
                    with Client(self.srv.unix_url, timeout=30) as c:
                        ws = [w for w in c.stats()["workers"] if w["state"] == "ready"]
                    if ws:
                        os.kill(rng.choice(ws)["pid"], signal.SIGKILL)
                        self.t.add("chaos_kills")
                except (OSError, ConnectionError) as exc:
                    self.t.add("chaos_error", note=repr(exc))
            if now >= next_reload:
                next_reload = now + self.args.reload_every
                flip = not flip
                server = self.srv.config_path.read_text().split("[[models]]")[0]
                self.srv.config_path.write_text(server + config(self.models, 800 if flip else 500))
                assert self.srv.proc is not None
                self.srv.proc.send_signal(signal.SIGHUP)
                self.t.add("chaos_reloads")

    models: dict[str, Path] = {}


def raw_socket(url: str) -> socket.socket:
    if url.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(url[len("unix://") :])
    else:
        host, port = url[len("tcp://") :].rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    return s


def read_until_close(s: socket.socket, stop_after_id: int | None = None) -> bool:
    """Read replies until the server closes, or until the reply with that id."""
    dec = framereader.FrameDecoder(1 << 30)
    while True:
        data = s.recv(65536)
        if not data:
            return False
        for body in dec.feed(data):
            msg = msgpack.unpackb(body, raw=False)
            if stop_after_id is not None and msg.get("id") == stop_after_id:
                return True
