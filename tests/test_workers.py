"""Worker instances: count, device and CPU placement, thread settings, per-worker
overrides, least-loaded dispatch, the per-worker `stats` entries and the ready log
line, and warm-up (derived inputs and TF Serving's warm-up records).

The machine has two CPUs and no GPU: a gpu:N worker is checked through what it
observes (CUDA_VISIBLE_DEVICES, no visible GPU, falls back to the CPU).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringserve.client import Client
from ringserve.client.common import infer_request
from ringserve.runtime.launch import ServerProcess
from ringserve.runtime.worker import warmup

from conftest import models_toml
from faults import wait_until
from models_extra import COUNTER_SIGNATURES, build_extra, copy_version

SLOW_N = 400_000  # iterations of the slow model: about 2 s of one CPU

PINNED = """
[models.instances]
count = 3
intra_op_threads = 2
inter_op_threads = 1
cpu_affinity = [[0], "1"]

[[models.instances.workers]]

[[models.instances.workers]]

[[models.instances.workers]]
cpu_affinity = "0-1"
intra_op_threads = 1
inter_op_threads = 2
"""

DEVS = """
[models.instances]
count = 3
devices = ["cpu", "gpu:1"]
gpu_memory_mb = 512

[[models.instances.workers]]
device = "gpu:0"
"""

# (model, index) -> what each worker must run with
WANT = {
    ("pinned", 0): {"device": "cpu", "intra": 2, "inter": 1, "cpus": [0]},
    ("pinned", 1): {"device": "cpu", "intra": 2, "inter": 1, "cpus": [1]},
    ("pinned", 2): {"device": "cpu", "intra": 1, "inter": 2, "cpus": [0, 1]},
    ("devs", 0): {"device": "gpu:0", "intra": 1, "inter": 1, "cpus": None},
    ("devs", 1): {"device": "gpu:1", "intra": 1, "inter": 1, "cpus": None},
    ("devs", 2): {"device": "cpu", "intra": 1, "inter": 1, "cpus": None},
    ("warm", 0): {"device": "cpu", "intra": 1, "inter": 1, "cpus": None},
}

READY = re.compile(
    r"worker (?P<label>\S+) ready: pid (?P<pid>\d+) model (?P<model>\S+) version (?P<version>\d+)"
    r" device (?P<device>\S+) intra_op_threads (?P<intra>\S+) inter_op_threads (?P<inter>\S+)"
    r" cpu_affinity \[(?P<cpus>[^\]]*)\] load [\d.]+s warmup (?P<warmup>\d+) runs"
)


def cpu_list(text: str) -> list[int]:
    """'0-1,3' -> [0, 1, 3]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def thread_cpus(pid: int) -> dict[int, list[int]]:
    """CPUs allowed for every thread of a process, as the kernel says."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # a thread that just ended
        line = next(ln for ln in status.splitlines() if ln.startswith("Cpus_allowed_list:"))
        out[int(tid)] = cpu_list(line.split(":", 1)[1])
    return out


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def ready_lines(log: Path) -> dict[int, dict[str, str]]:
    """The ready log lines by worker pid."""
    out = {}
    for m in READY.finditer(log.read_text(errors="replace")):
        out[int(m["pid"])] = m.groupdict()
    return out


def by_key(c: Client) -> dict[tuple[str, int], dict[str, Any]]:
    return {(w["model"], w["index"]): w for w in c.stats()["workers"]}


def all_ready(c: Client, n: int) -> dict[tuple[str, int], dict[str, Any]] | None:
    ws = by_key(c)
    return ws if len(ws) == n and all(w["state"] == "ready" for w in ws.values()) else None


# ---- a hand-made protobuf encoder for TF Serving warm-up records ----------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers: 64-bit two's complement, as protobuf does
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fkey(num: int, wire: int) -> bytes:
    return varint(num << 3 | wire)


def fvar(num: int, v: int) -> bytes:
    return fkey(num, 0) + varint(v)


def flen(num: int, data: bytes) -> bytes:
    return fkey(num, 2) + varint(len(data)) + data


F32, F64, INT32, UINT8, INT16, INT8, STRING, INT64, BOOL = 1, 2, 3, 4, 5, 6, 7, 9, 10
UINT16, HALF, UINT32, UINT64 = 17, 19, 22, 23


def tensor_proto(
    dtype: int,
    shape: list[int],
    *,
    content: bytes | None = None,
    field: int = 0,
    values: list[Any] | tuple[Any, ...] = (),
    packed: bool = True,
) -> bytes:
    """A TensorProto; `field` is the typed repeated field holding `values`."""
    dims = b"".join(flen(2, fvar(1, d)) for d in shape)
    body = fvar(1, dtype) + flen(2, dims)
    if content is not None:
        body += flen(4, content)
    if field == 8:
        body += b"".join(flen(8, v) for v in values)
    elif field in (5, 6):
        code, wire = ("<f", 5) if field == 5 else ("<d", 1)
        items = [struct.pack(code, v) for v in values]
        body += (
            flen(field, b"".join(items))
            if packed
            else b"".join(fkey(field, wire) + i for i in items)
        )
    elif field:
        if packed:
            body += flen(field, b"".join(varint(int(v)) for v in values))
        else:
            body += b"".join(fvar(field, int(v)) for v in values)
    return body


def prediction_log(inputs: dict[str, bytes], signature: str | None = None) -> bytes:
    """PredictionLog{log_metadata, predict_log: PredictLog{request, response}}."""
    spec = flen(1, b"warm") + (flen(3, signature.encode()) if signature else b"")
    entries = b"".join(flen(2, flen(1, k.encode()) + flen(2, v)) for k, v in inputs.items())
    request = flen(1, spec) + entries
    metadata = flen(1, flen(1, flen(1, b"warm")))
    return metadata + flen(6, flen(1, request) + flen(2, b""))


def classify_log() -> bytes:
    """A PredictionLog of another kind (classify_log): warm-up skips it."""
    return flen(2, flen(1, flen(1, flen(1, b"warm"))))


def half_bits(values: list[float]) -> list[int]:
    return np.array(values, np.float16).view(np.uint16).astype(int).tolist()


def warmup_records() -> tuple[list[bytes], dict[str, float]]:
    """Records for the Counter model and the counter values they add up to."""
    from tensorflow import make_tensor_proto

    k = np.array([[2**40, -3], [1, 1]], np.int64)
    records = [
        # no signature name: serving_default; tensor encoded by TensorFlow itself
        prediction_log(
            {"x": make_tensor_proto(np.array([1.5, 2.5, -1.0], np.float32)).SerializeToString()}
        ),
        prediction_log(
            {"x": tensor_proto(F32, [2], field=5, values=[0.25, 0.25], packed=False)},
            "serving_default",
        ),
        classify_log(),
        prediction_log(
            {
                "n": tensor_proto(INT32, [3], field=7, values=[-5, 7, 100]),
                "k": tensor_proto(INT64, [2, 2], field=10, values=k.ravel().tolist()),
            },
            "ints",
        ),
        prediction_log(
            {
                "n": tensor_proto(INT32, [1], content=np.array([10], "<i4").tobytes()),
                "k": make_tensor_proto(np.array([[1, 2]], np.int64)).SerializeToString(),
            },
            "ints",
        ),
        # four strings given three: the last one repeats, as in TensorFlow
        prediction_log(
            {"s": tensor_proto(STRING, [4], field=8, values=["héllo".encode(), b"", b"ab"])},
            "strs",
        ),
        prediction_log(
            {
                "h": tensor_proto(HALF, [2], field=13, values=half_bits([1.5, -0.5])),
                "d": tensor_proto(F64, [3], field=6, values=[0.125]),
                "b": tensor_proto(BOOL, [3], field=11, values=[1, 0, 1], packed=False),
                "u": tensor_proto(UINT8, [2], field=7, values=[3]),
            },
            "more",
        ),
    ]
    totals = {
        "f": 1.5 + 2.5 - 1.0 + 0.5,
        "i": -5 + 7 + 100 + int(k.sum()) + 10 + 3,
        "s": 6 + 0 + 2 + 2,
        "m": 1.5 - 0.5 + 3 * 0.125 + 2 * 1000 + 6 * 1e6,
    }
    return records, totals


N_WARMUP_PREDICTS = 6


def write_tfrecords(path: Path, records: list[bytes]) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)


# ---- the server -----------------------------------------------------------------------


@dataclass
class Server:
    srv: ServerProcess
    log: Path
    workers: dict[tuple[str, int], dict[str, Any]]
    totals: dict[str, float]

    @property
    def url(self) -> str:
        return self.srv.unix_url


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[Server]:
    extra = build_extra(tmp_path_factory.getbasetemp() / "models_extra")
    base = tmp_path_factory.mktemp("workers")
    (base / "warm").mkdir()
    warm = copy_version(extra / "counter", base / "warm", 1)
    records, totals = warmup_records()
    write_tfrecords(warm / "assets.extra" / "tf_serving_warmup_requests", records)
    toml = "\n".join(
        [
            models_toml(model_root, ["slow"]).replace('"slow"', '"pinned"', 1) + PINNED,
            models_toml(model_root, ["linear"]).replace('"linear"', '"devs"', 1) + DEVS,
            f'[[models]]\nname = "warm"\nbase_path = "{base / "warm"}"\n',
        ]
    )
    log = base / "server.log"
    with open(log, "wb") as err:
        srv = ServerProcess(toml, "grace_seconds = 20", stderr=err)
        srv.start()
        try:
            with Client(srv.unix_url) as c:
                workers = wait_until(lambda: all_ready(c, len(WANT)), 120, "all workers ready")
            yield Server(srv, log, workers, totals)
        finally:
            code = srv.stop()
    assert code == 0, f"server exited with {code}; log:\n{log.read_text()[-3000:]}"


# ---- stats and the ready log line ------------------------------------------------------


def test_stats_has_one_entry_per_worker_with_every_field(ws: Server) -> None:
    with Client(ws.url) as c:
        st = c.stats()
    workers = st["workers"]
    assert len(workers) == len(WANT) == len(ws.workers)
    assert sorted((w["model"], w["index"]) for w in workers) == sorted(WANT)
    types: dict[str, type | tuple[type, ...]] = {
        "pid": int,
        "model": str,
        "version": int,
        "device": str,
        "intra_op_threads": int,
        "inter_op_threads": int,
        "cpu_affinity": list,
        "requests": int,
        "busy_seconds": (int, float),
        "cpu_seconds": (int, float),
        "voluntary_ctx_switches": int,
        "involuntary_ctx_switches": int,
        "call_paths": dict,
    }
    server_pid = st["server"]["pid"]
    for w in workers:
        for k, t in types.items():
            assert isinstance(w.get(k), t), (k, w)
        assert all(isinstance(cpu, int) for cpu in w["cpu_affinity"])
        assert w["version"] == 1
        assert set(w["call_paths"].values()) <= {"flat", "public"}, w["call_paths"]
        # a real worker process of this server
        assert ppid(w["pid"]) == server_pid
        cmd = Path(f"/proc/{w['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"ringserve.runtime.worker" in cmd
        # loading TensorFlow took CPU time and it has waited for work
        assert w["cpu_seconds"] > 0 and w["voluntary_ctx_switches"] > 0
        assert w["involuntary_ctx_switches"] >= 0
    assert len({w["pid"] for w in workers}) == len(workers)


def test_threads_and_affinity_as_the_worker_sees_them(ws: Server) -> None:
    with Client(ws.url) as c:
        workers = by_key(c)
    everything = sorted(os.sched_getaffinity(0))
    for key, want in WANT.items():
        w = workers[key]
        cpus = want["cpus"] or everything
        got = (w["intra_op_threads"], w["inter_op_threads"], w["cpu_affinity"])
        assert got == (want["intra"], want["inter"], cpus), (key, w)
        conf = w["configured"]
        assert (conf["intra_op_threads"], conf["inter_op_threads"]) == (
            want["intra"],
            want["inter"],
        )
        # the kernel agrees
        assert sorted(os.sched_getaffinity(w["pid"])) == cpus, key


def test_cpu_affinity_pins_every_thread_of_the_worker(ws: Server) -> None:
    """Found here: runtime/worker/main.py configure_process() called
    os.sched_setaffinity(0, ...), which pins the calling thread only; the OpenBLAS thread
    numpy starts at import (with more than one CPU) kept every CPU."""
    with Client(ws.url) as c:
        workers = by_key(c)
    for key in (("pinned", 0), ("pinned", 1)):
        cpus = WANT[key]["cpus"]
        threads = thread_cpus(workers[key]["pid"])
        assert len(threads) > 1
        assert {t: cpus for t in threads} == threads, key


def test_devices_worker_i_gets_devices_i_mod_n(ws: Server) -> None:
    with Client(ws.url) as c:
        workers = by_key(c)
    for key, want in WANT.items():
        w = workers[key]
        assert w["configured"]["device"] == want["device"], key
        # no GPU on this machine: TensorFlow in a gpu:N worker sees none, runs on CPU
        assert w["device"] == "cpu", key
    assert workers[("devs", 0)]["configured"]["gpu_memory_mb"] == 512
    log = ws.log.read_text(errors="replace")
    for i, dev in ((0, "gpu:0"), (1, "gpu:1")):
        assert re.search(
            rf"worker devs/1/w{i}\.\d+: configured {dev} but TensorFlow sees no GPU", log
        )
    assert not re.search(r"worker devs/1/w2\.\d+: configured", log)


def test_device_environment_observed_in_stats(ws: Server) -> None:
    """Found here: runtime/workers.py WorkerHandle.describe() copied only some fields of
    the ready message; cuda_visible_devices and visible_gpus never reached stats."""
    with Client(ws.url) as c:
        workers = by_key(c)
    want = {("devs", 0): "0", ("devs", 1): "1", ("devs", 2): "-1", ("pinned", 0): "-1"}
    for key, cvd in want.items():
        w = workers[key]
        assert w.get("cuda_visible_devices") == cvd, (key, w)
        assert w.get("visible_gpus") == [], (key, w)


def test_ready_log_line_says_what_stats_says(ws: Server) -> None:
    lines = ready_lines(ws.log)
    with Client(ws.url) as c:
        workers = c.stats()["workers"]
    for w in workers:
        ln = lines.get(w["pid"])
        assert ln is not None, f"no ready line for worker {w['pid']}"
        assert (ln["model"], int(ln["version"]), ln["device"]) == (
            w["model"],
            w["version"],
            w["device"],
        )
        assert (int(ln["intra"]), int(ln["inter"])) == (
            w["intra_op_threads"],
            w["inter_op_threads"],
        )
        assert cpu_list(ln["cpus"]) == w["cpu_affinity"]
        assert int(ln["warmup"]) >= 1
    # and the configuration, not only stats
    for w in workers:
        want = WANT[(w["model"], w["index"])]
        ln = lines[w["pid"]]
        assert (int(ln["intra"]), int(ln["inter"])) == (want["intra"], want["inter"])
        if want["cpus"]:
            assert cpu_list(ln["cpus"]) == want["cpus"]


# ---- dispatch --------------------------------------------------------------------------


def slow_inputs(n: int) -> dict[str, Any]:
    return {"x": np.ones((1, 4), np.float32), "n": np.int32(n)}


def test_least_loaded_worker_gets_the_request_and_counters_move(ws: Server) -> None:
    """One worker busy with a long request: the next ones all go to the idle ones (round
    robin would send a third of them to the busy one)."""
    with Client(ws.url) as busy_c, Client(ws.url) as c:
        before = {w["pid"]: w for w in by_key(c).values() if w["model"] == "pinned"}
        t0 = time.monotonic()
        rid = busy_c.send(infer_request("pinned", slow_inputs(SLOW_N), None, None, None, None))
        running = wait_until(
            lambda: [w for w in by_key(c).values() if w["model"] == "pinned" and w["inflight"]],
            30,
            "the long request running",
        )
        assert len(running) == 1
        busy = running[0]["pid"]
        for _ in range(6):
            c.infer("pinned", slow_inputs(1))
        mid = {w["pid"]: w for w in by_key(c).values() if w["model"] == "pinned"}
        assert mid[busy]["inflight"] == 1, "the long request ended too soon for this test"
        assert mid[busy]["requests"] == before[busy]["requests"]
        others = [p for p in mid if p != busy]
        assert sum(mid[p]["requests"] - before[p]["requests"] for p in others) == 6
        reply = busy_c.recv(rid)
        wall = time.monotonic() - t0
        assert reply["ok"], reply
        after = {w["pid"]: w for w in by_key(c).values() if w["model"] == "pinned"}
    b0, b1 = before[busy], after[busy]
    assert b1["requests"] == b0["requests"] + 1 and b1["inflight"] == 0
    busy_s = b1["busy_seconds"] - b0["busy_seconds"]
    cpu_s = b1["cpu_seconds"] - b0["cpu_seconds"]
    assert 0.3 < busy_s <= wall + 0.05, (busy_s, wall)
    assert cpu_s > 0.3, cpu_s  # the long request is CPU work
    assert b1["voluntary_ctx_switches"] > b0["voluntary_ctx_switches"]
    assert b1["involuntary_ctx_switches"] >= b0["involuntary_ctx_switches"]
    for p in others:
        served = after[p]["requests"] - before[p]["requests"]
        if served:
            assert after[p]["busy_seconds"] > before[p]["busy_seconds"]
            assert after[p]["voluntary_ctx_switches"] > before[p]["voluntary_ctx_switches"]


def test_killed_worker_requests_go_to_live_ones_and_it_returns_pinned(ws: Server) -> None:
    with Client(ws.url) as c:
        victim = by_key(c)[("pinned", 1)]
        os.kill(victim["pid"], signal.SIGKILL)
        replies = c.infer_many("pinned", [slow_inputs(1)] * 30)
        assert [r for r in replies if isinstance(r, Exception)] == []

        def back() -> dict[str, Any] | None:
            w = by_key(c).get(("pinned", 1))
            ok = w is not None and w["pid"] != victim["pid"] and w["state"] == "ready"
            return w if ok else None

        new = wait_until(back, 120, "worker pinned/w1 restarted")
        assert new["restarts"] == victim["restarts"] + 1
        assert (new["intra_op_threads"], new["inter_op_threads"], new["cpu_affinity"]) == (
            2,
            1,
            [1],
        )
        assert sorted(os.sched_getaffinity(new["pid"])) == [1]
        assert set(map(tuple, thread_cpus(new["pid"]).values())) == {(1,)}
        assert c.infer("pinned", slow_inputs(3))["y"].shape == (1, 4)


# ---- warm-up ---------------------------------------------------------------------------


def test_warmup_runs_every_signature_and_the_tf_serving_records(ws: Server) -> None:
    """The Counter model adds what it is fed to its counters: after warm-up they hold
    exactly what the warm-up records carried, decoded from every encoding."""
    w = ws.workers[("warm", 0)]
    line = ready_lines(ws.log)[w["pid"]]
    runs = int(line["warmup"])
    assert runs == len(COUNTER_SIGNATURES) + N_WARMUP_PREDICTS
    with Client(ws.url) as c:
        got = c.infer("warm", {"x": np.zeros(1, np.float32)})
        requests = next(x for x in c.stats()["workers"] if x["model"] == "warm")["requests"]
    vals = {k: a.ravel()[0].item() for k, a in got.items()}
    assert vals["calls"] == runs + requests  # no probe call of the flat path counted
    # A model that changes state is never probed, so it keeps the public call.
    assert set(w["call_paths"].values()) == {"public"}, w["call_paths"]
    assert vals["f"] == pytest.approx(ws.totals["f"])
    assert vals["i"] == ws.totals["i"]
    assert vals["s"] == ws.totals["s"]
    assert vals["m"] == pytest.approx(ws.totals["m"])


def test_warmup_reader_decodes_what_tensorflow_encodes(tmp_path: Path) -> None:
    """read_predict_requests against TensorFlow's own reading of the same TensorProtos."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    tensors = {
        "f32_packed": tensor_proto(F32, [2, 2], field=5, values=[1.0, -2.5, 3.25, 0.0]),
        "f32_fill": tensor_proto(F32, [3], field=5, values=[7.5]),
        "f32_none": tensor_proto(F32, [2], field=5, values=[]),
        "f64_loose": tensor_proto(F64, [2], field=6, values=[1e300, -0.5], packed=False),
        "i32_neg": tensor_proto(INT32, [3], field=7, values=[-1, 2**31 - 1, -(2**31)]),
        "i8": tensor_proto(INT8, [2], field=7, values=[-128, 127]),
        "i16": tensor_proto(INT16, [2], field=7, values=[-32768, 5]),
        "u8": tensor_proto(UINT8, [3], field=7, values=[0, 255, 9], packed=False),
        "u16": tensor_proto(UINT16, [1], field=7, values=[65535]),
        "u32": tensor_proto(UINT32, [2], field=16, values=[2**32 - 1, 0]),
        "u64": tensor_proto(UINT64, [2], field=17, values=[2**64 - 1, 2**63 + 5]),
        "i64": tensor_proto(INT64, [1, 2], field=10, values=[-(2**63), 2**62]),
        "bool": tensor_proto(BOOL, [2, 1], field=11, values=[1, 0]),
        "half": tensor_proto(HALF, [3], field=13, values=half_bits([0.5, -65504.0, 1e-3])),
        "scalar": tensor_proto(F64, [], field=6, values=[2.5]),
        "str": tensor_proto(STRING, [2, 2], field=8, values=[b"a", b"", "ü".encode(), b"\0"]),
        "content_f32": tensor_proto(F32, [2], content=np.array([1, 2], "<f4").tobytes()),
        "content_u64": tensor_proto(UINT64, [1], content=np.array([2**64 - 2], "<u8").tobytes()),
        "tf_f16": tf.make_tensor_proto(np.array([[1, 2]], np.float16)).SerializeToString(),
        "tf_str": tf.make_tensor_proto(np.array([b"x", b"yz"], object)).SerializeToString(),
        "tf_bool": tf.make_tensor_proto(np.array([True, False, True])).SerializeToString(),
        "tf_i64": tf.make_tensor_proto(np.array([-3, 4], np.int64)).SerializeToString(),
    }
    path = tmp_path / "tf_serving_warmup_requests"
    write_tfrecords(
        path,
        [
            prediction_log(tensors, "sig_a"),
            classify_log(),
            prediction_log({"only": tensors["scalar"]}),
        ],
    )
    got = list(warmup.read_predict_requests(path))
    assert [(s, sorted(i)) for s, i in got] == [("sig_a", sorted(tensors)), (None, ["only"])]
    for name, raw in tensors.items():
        want = tf.make_ndarray(tensor_pb2.TensorProto.FromString(raw))
        a = got[0][1][name]
        assert a.shape == want.shape, name
        if want.dtype == object:
            assert a.dtype == object and a.tolist() == want.tolist(), name
        else:
            assert a.dtype == want.dtype, (name, a.dtype, want.dtype)
            np.testing.assert_array_equal(a, want, err_msg=name)
    assert got[1][1]["only"].shape == () and got[1][1]["only"] == 2.5

    # a flipped byte is found by the record checksums, not decoded into nonsense
    data = bytearray(path.read_bytes())
    data[30] ^= 0x40
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="crc"):
        list(warmup.read_predict_requests(bad))
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        list(warmup.read_predict_requests(cut))


# ---- refused placements ----------------------------------------------------------------


@pytest.mark.parametrize(
    "instances, words",
    [
        ("count = 1\n[[models.instances.workers]]\n[[models.instances.workers]]\n", ["workers"]),
        ('cpu_affinity = ["0", [64]]\n', ["cpu_affinity", "64"]),
        ('devices = ["tpu:0"]\n', ["devices", "tpu:0"]),
        ("count = 2\n[[models.instances.workers]]\nnuma = 1\n", ["workers[0].numa"]),
    ],
)
def test_impossible_placement_is_refused(
    model_root: Path, tmp_path: Path, instances: str, words: list[str]
) -> None:
    toml = models_toml(model_root, ["linear"]) + "[models.instances]\n" + instances
    srv = ServerProcess(toml, workdir=str(tmp_path), wait_ready=False, stderr=subprocess.PIPE)
    srv.start()
    try:
        assert srv.proc is not None
        _, err = srv.proc.communicate(timeout=60)
    finally:
        srv.stop()
    assert srv.proc.returncode == 2
    text = err.decode()
    for w in words:
        assert w in text, (w, text)
    assert not os.path.exists(srv.unix)
