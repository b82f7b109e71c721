"""Soak: mixed valid, invalid and hostile traffic against a real server for a long time,
while workers are killed (-9), the config is reloaded (SIGHUP) and clients reconnect.

    python perf/soak.py                       # 30 minutes
    python perf/soak.py --minutes 0.5         # the short version CI runs (tests/test_soak.py)
    python perf/soak.py --write-results       # the acceptance table into perf/RESULTS.md

Traffic (all on loopback, bounded: a fixed number of threads, each one request or one
connection at a time, plus short pauses):
- valid: pipelined `infer` of 1-8 rows on `linear` (2 workers, batching) and `demo`
  (the MLP, 1 worker), over Unix and TCP, reconnecting every few dozen requests; every
  output is compared with the in-process TensorFlow answer for the same rows
  (computed once, in a child process, for a fixed bank of inputs);
- shared memory: inputs and outputs in a registered region, and now and then a second
  region truncated to 0 under the server before an `infer` that reads it;
- invalid: unknown model, wrong dtype, wrong shape, missing input, rank 100, a dim of
  2**40, a body that is not a map: each must be answered with an error;
- hostile, on raw sockets: a length header beyond max_frame_bytes, random bytes as a
  body, a frame sent slowly in two halves, 50 requests sent by a client that closes
  without reading, connect-and-close;
- chaos: kill -9 of a random worker every `--kill-every` seconds, SIGHUP with a
  changed batch timeout every `--reload-every` seconds.

Every `--sample-seconds` the server process's RSS, open fds, threads and the
`ringserve*` entries in /dev/shm are recorded. Acceptance (exit 0 when all are met):
no request without a reply; no wrong answer (an OK reply whose values differ from
TensorFlow's, or an OK reply to an invalid request); valid requests fail only with
UNAVAILABLE (a worker killed under them); RSS growth after warm-up under 5% (judged on
runs of 5 minutes or more: warm-up is the first fifth, at most 5 minutes); fds and
/dev/shm entries back to their starting counts once traffic stops. RSS is recorded with
its parts: anonymous memory (the frontend's own) and shared memory (the workers' rings,
which the server maps whole from their creation).

Diagnostics (not part of the acceptance): `--trace-memory DIR` makes the server sample
its RSS, glibc's malloc counters and gc object counts, and write tracemalloc snapshots
(perf/memtrace/; `python perf/memtrace/diff.py DIR` shows what grew, by traceback);
`--server-env MALLOC_ARENA_MAX=2` and the like set the server's environment.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchcli as C
import benchlib as B
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

REFERENCE = """
import sys, numpy as np, tensorflow as tf
out = {}
bank = np.load(sys.argv[1])
for model, path in (("linear", sys.argv[2]), ("demo", sys.argv[3])):
    fn = tf.saved_model.load(path).signatures["serving_default"]
    for k, v in fn(x=tf.constant(bank[model])).items():
        out[f"{model}/{k}"] = v.numpy()
np.savez(sys.argv[4], **out)
"""


def reference_bank(tmp: Path, models: dict[str, Path], seed: int) -> tuple[dict, dict]:
    """Inputs, and TensorFlow's outputs for them, computed in a TF child process."""
    rng = np.random.default_rng(seed)
    bank = {m: rng.standard_normal((BANK_ROWS, w)).astype(np.float32) for m, w in WIDTH.items()}
    np.savez(tmp / "bank.npz", **bank)  # type: ignore[arg-type]  # (numpy's stub: allow_pickle)
    subprocess.run(
        [
            sys.executable,
            "-c",
            REFERENCE,
            str(tmp / "bank.npz"),
            str(models["linear"]),
            str(models["demo"]),
            str(tmp / "ref.npz"),
        ],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    ref: dict[str, dict[str, np.ndarray]] = {"linear": {}, "demo": {}}
    with np.load(tmp / "ref.npz") as z:
        for key in z.files:
            model, out = key.split("/")
            ref[model][out] = z[key]
    return bank, ref


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


# ---- sampling --------------------------------------------------------------------------
def sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        # VmRSS = anonymous + file-backed + shared memory pages mapped in; the rings are
        # shared memory, counted once the server has touched their pages.
        "anon_kb": int(fields["RssAnon"].split()[0]),
        "shmem_kb": int(fields["RssShmem"].split()[0]),
        "threads": int(fields["Threads"].strip()),
        "fds": open_fds(pid),
        "shm": len([e for e in os.listdir("/dev/shm") if "ringserve" in e]),
    }


def open_fds(pid: int) -> int:
    """The server's open fds but its fine timer's: the frontend creates that one timerfd
    the first time it times a batch (frontend/polling.py), so a start sample taken
    before any traffic may lack it, and an end sample always has it."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[timerfd]"
        except OSError:  # closed since listed
            pass
    return n


def all_ready(srv: ServerProcess, counts: dict[str, int]) -> bool:
    try:
        with Client(srv.unix_url, timeout=10) as c:
            ws = c.stats()["workers"]
    except (OSError, ConnectionError):
        return False
    have = Counter(w["model"] for w in ws if w["state"] == "ready")
    return len(ws) == sum(counts.values()) and all(have[m] == n for m, n in counts.items())


def wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between worker kills")
    p.add_argument("--reload-every", type=float, default=45.0, help="seconds between SIGHUPs")
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--valid-clients", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--trace-memory",
        type=Path,
        metavar="DIR",
        help="diagnostics: the server samples RSS, malloc and gc counts and writes "
        "tracemalloc snapshots into DIR (perf/memtrace/; diff them with diff.py)",
    )
    p.add_argument("--trace-seconds", type=float, default=30.0)
    p.add_argument("--trace-trim", action="store_true", help="malloc_trim(0) after each sample")
    p.add_argument(
        "--trace-no-snapshots", action="store_true", help="samples only, tracemalloc off"
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnostics: an environment variable for the server (e.g. MALLOC_ARENA_MAX=2)",
    )
    C.add_output_args(p)
    args = p.parse_args(argv)
    # --quick: the short soak of tests/test_soak.py.
    C.apply_quick(args, minutes=0.34, kill_every=6.0, reload_every=9.0, sample_seconds=2.0)

    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="rs-soak-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "models").mkdir()
        models = inproc.build_models(tmp / "models")
        bank, ref = reference_bank(tmp, models, args.seed)
        server_toml = (
            f"ring_bytes = 4194304\nmax_frame_bytes = {MAX_FRAME}\nmax_regions_per_connection = 4"
            "\nversion_poll_seconds = 0\nheartbeat_timeout_seconds = 30"
        )
        env = {}
        if args.trace_memory:
            here = str(Path(__file__).resolve().parent / "memtrace")
            env = {
                "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
                "RINGSERVE_MEMTRACE_DIR": str(args.trace_memory.resolve()),
                "RINGSERVE_MEMTRACE_SECONDS": str(args.trace_seconds),
                "RINGSERVE_MEMTRACE_TRIM": "1" if args.trace_trim else "",
                "RINGSERVE_MEMTRACE_SNAPSHOTS": "0" if args.trace_no_snapshots else "1",
            }
        env.update(kv.split("=", 1) for kv in args.server_env)
        srv = ServerProcess(config(models, 500), server_toml, env=env)
        srv.start()
        counts = {"linear": 2, "demo": 1}
        try:
            assert srv.proc is not None
            pid = srv.proc.pid
            wait(lambda: all_ready(srv, counts), 120)
            start = sample(pid)
            soak = Soak(args, srv, bank, ref)
            soak.models = models
            threads = [
                threading.Thread(target=soak.valid, args=(i,)) for i in range(args.valid_clients)
            ]
            threads += [
                threading.Thread(target=soak.shm, args=(100,)),
                threading.Thread(target=soak.invalid, args=(200,)),
                threading.Thread(target=soak.hostile, args=(300,)),
                threading.Thread(target=soak.chaos),
            ]
            t0 = time.monotonic()
            for t in threads:
                t.daemon = True
                t.start()
            samples = []
            while time.monotonic() - t0 < seconds:
                s = sample(pid)
                s["t"] = round(time.monotonic() - t0, 1)
                samples.append(s)
                left = seconds - (time.monotonic() - t0)
                time.sleep(max(0.0, min(args.sample_seconds, left)))
            soak.halt.set()
            for t in threads:
                t.join(REPLY_TIMEOUT + 30)
            stuck = [t.name for t in threads if t.is_alive()]
            # The end is the sample that found the server back to its start, not one
            # taken after it: the supervisor opens fds for a moment on its own (a
            # version poll's directory scan, /proc reads), and a sample that lands on
            # one says nothing about a leak.
            last: dict[str, dict[str, Any]] = {}

            def back_to_start() -> bool:
                if not all_ready(srv, counts):
                    return False
                last["end"] = s = sample(pid)
                return bool(s["fds"] <= start["fds"] and s["shm"] <= start["shm"])

            settled = wait(back_to_start, 120)
            end = last.get("end") or sample(pid)
            code = srv.stop()
        finally:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.stop(signal.SIGKILL)
    return report(args, seconds, start, end, samples, soak.t, stuck, settled, code)


def report(
    args: argparse.Namespace,
    seconds: float,
    start: dict,
    end: dict,
    samples: list[dict],
    t: Tally,
    stuck: list[str],
    settled: bool,
    code: int,
) -> int:
    c = t.c
    warm = min(300.0, seconds / 5)

    def window(key: str) -> tuple[float, float]:
        """Median of `key` in the minute after warm-up, and in the last minute."""
        base = [s[key] for s in samples if warm <= s["t"] < warm + 60] or [samples[0][key]]
        last = [s[key] for s in samples if s["t"] >= seconds - 60] or [samples[-1][key]]
        return float(np.median(base)), float(np.median(last))

    rb, re_ = window("rss_kb")
    growth = re_ / rb - 1
    ab, ae = window("anon_kb")
    judged = seconds >= 300
    rows = [
        ("requests without a reply", c["no_reply"], "0", c["no_reply"] == 0 and not stuck),
        ("wrong answers", c["wrong"], "0", c["wrong"] == 0),
        (
            "valid requests failed other than UNAVAILABLE",
            c["valid_other_error"],
            "0",
            c["valid_other_error"] == 0,
        ),
        (
            "RSS growth after warm-up",
            f"{growth * 100:+.1f}% ({rb / 1024:.1f} -> {re_ / 1024:.1f} MiB)",
            "< 5%" if judged else "< 5% (not judged: run < 5 min)",
            growth < 0.05 or not judged,
        ),
        (
            "of which anonymous memory (RssAnon), after warm-up",
            f"{(ae / ab - 1) * 100:+.1f}% ({ab / 1024:.1f} -> {ae / 1024:.1f} MiB)",
            "(recorded)",
            True,
        ),
        (
            "open fds, start -> end",
            f"{start['fds']} -> {end['fds']}",
            "no more",
            end["fds"] <= start["fds"],
        ),
        (
            "/dev/shm ringserve entries, start -> end",
            f"{start['shm']} -> {end['shm']}",
            "no more",
            end["shm"] <= start["shm"],
        ),
        ("threads, start -> end", f"{start['threads']} -> {end['threads']}", "(recorded)", True),
        ("server exit code after SIGTERM", code, "0", code == 0),
    ]
    ok = all(r[3] for r in rows)
    peak = max(s["rss_kb"] for s in samples) / 1024
    traffic = (
        f"valid requests {c['valid_sent']} (ok {c['valid_ok']}, UNAVAILABLE "
        f"{c['valid_unavailable']}), invalid {c['invalid_sent']} (answered with an error "
        f"{c['invalid_answered']}), hostile: truncated regions {c['trunc_sent']} "
        f"(answered with an error {c['trunc_answered']}), oversize headers "
        f"{c['hostile_oversize']}, garbage bodies {c['hostile_garbage']}, slow frames "
        f"{c['hostile_slow']} (answered {c['slow_answered']}), non-reading clients "
        f"{c['hostile_noread']}, connect-and-close "
        f"{c['hostile_close']}; workers killed {c['chaos_kills']}, reloads {c['chaos_reloads']}"
    )
    body = "\n".join(
        [
            *B.machine_lines(B.machine_info()),
            f"- command: `{B.command_line()}`",
            f"- run: {B.now_utc()}, {seconds / 60:.1f} minutes, {len(samples)} samples every "
            f"{args.sample_seconds:g} s; peak RSS {peak:.0f} MiB",
            f"- traffic: {traffic}",
            "",
            B.md_table(
                ["criterion", "measured", "limit", "met"],
                [(a, b, lim, "yes" if m else "**no**") for a, b, lim, m in rows],
            ),
        ]
    )
    body += "\n\n" + windows(samples, seconds)
    if stuck:
        body += f"\n\nthreads still running at the end: {stuck}"
    if t.notes:
        body += "\n\nfirst notes:\n" + "\n".join(f"- {n}" for n in t.notes[:10])
    print(body)
    C.write_json(
        args.json,
        {
            "counts": dict(c),
            "start": start,
            "end": end,
            "samples": samples,
            "rss_growth": growth,
            "ok": ok,
            "notes": t.notes,
        },
    )
    return C.publish(args, "soak", "Soak (perf/soak.py)", body, not ok)


def windows(samples: list[dict], seconds: float) -> str:
    """The server's memory per window of the run: min / median / max, MiB."""
    span = 300.0 if seconds >= 1200 else max(60.0, seconds / 5)
    rows = []
    lo = 0.0
    while lo < seconds:
        w = [s for s in samples if lo <= s["t"] < lo + span]
        lo += span
        if not w:
            continue

        def mmm(key: str, w: list[dict] = w) -> str:
            v = [s[key] / 1024 for s in w]
            return f"{min(v):.1f} / {float(np.median(v)):.1f} / {max(v):.1f}"

        fds = [s["fds"] for s in w]
        rows.append(
            (
                f"{(lo - span) / 60:g}-{lo / 60:g}",
                mmm("rss_kb"),
                mmm("anon_kb"),
                mmm("shmem_kb"),
                f"{min(fds)}-{max(fds)}",
            )
        )
    return (
        "Server process per window (MiB, min / median / max; RssShmem is the workers' "
        "rings, mapped whole; fds while traffic runs include the soak's own connections):"
        "\n\n" + B.md_table(["minutes", "RSS", "RssAnon", "RssShmem", "open fds"], rows)
    )


if __name__ == "__main__":
    sys.exit(main())
