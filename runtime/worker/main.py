"""Worker process entry: settings before TensorFlow, then the serving loop.

The spec arrives as JSON in RINGSERVE_WORKER_SPEC; the rings and eventfds arrive as
inherited file descriptors. Exit codes: 0 stopped, 3 failed to load (the supervisor
does not retry fast), 4 parent gone, 5 ring corrupt.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from typing import Any

from ringserve.ipc import control, layout, records, shm, wake
from ringserve.ipc.ring import RecordTooLarge, Ring, RingCorrupt
from ringserve.ipc.tensors import DTYPE_CODES

from .held import Held, RequestError
from .say import flush as say_flush
from .say import say, say_exception

EXIT_OK = 0
EXIT_LOAD_FAILED = 3
EXIT_ORPHANED = 4
EXIT_CORRUPT = 5

PR_SET_PDEATHSIG = 1


class LoadFailed(Exception):
    """No model version of the worker loaded: the message of each (one alone: its own)."""

    def __init__(self, reports: list[dict[str, Any]]) -> None:
        if len(reports) == 1:
            super().__init__(reports[0]["message"])
        else:
            super().__init__(
                "; ".join(f"{r['model']}/{r['version']}: {r['message']}" for r in reports)
            )


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(EXIT_ORPHANED)


def configure_process(spec: dict[str, Any]) -> None:
    """Everything that must happen before `import tensorflow`."""
    place = spec["placement"]
    if place["cpu_affinity"]:
        # Every thread: affinity is per thread, and numpy's BLAS pool already runs.
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), place["cpu_affinity"])
            except OSError:
                pass
    from ringserve.runtime.placement import device_env

    os.environ.update(device_env(place["device"]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TF reads these at context creation too; set both ways so a GPU build agrees.
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(place["intra_op_threads"])
    os.environ["TF_NUM_INTEROP_THREADS"] = str(place["inter_op_threads"])


def main() -> None:
    spec = json.loads(os.environ["RINGSERVE_WORKER_SPEC"])
    parent = int(spec["parent_pid"])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; TERM kills
    configure_process(spec)
    ctl = int(spec["ctl_fd"])
    req_seg = shm.attach(spec["req_fd"], spec["segment_bytes"])
    resp_seg = shm.attach(spec["resp_fd"], spec["segment_bytes"])
    req = Ring(req_seg.map)
    resp = Ring(resp_seg.map)
    place = spec["placement"]
    try:
        from . import model as M

        M.configure(
            place["intra_op_threads"],
            place["inter_op_threads"],
            place["device"],
            place["gpu_memory_mb"],
            place["gpu_memory_fraction"],
        )
        held = Held()
        reports = held.load_all(_entries(spec), M)
        if not held.loaded:
            raise LoadFailed(reports)
        first = next(r for r in reports if r["ok"])
        info = {
            "t": "ready",
            "pid": os.getpid(),
            # The first model's figures where one model is expected (a model's own
            # worker); `models` has one report per model version held.
            "signatures": first["signatures"],
            "load_seconds": sum(r.get("load_seconds", 0.0) for r in reports),
            "warmup_seconds": sum(r.get("warmup_seconds", 0.0) for r in reports),
            "warmup_runs": sum(r.get("warmup_runs", 0) for r in reports),
            "call_paths": first["call_paths"],
            "models": reports,
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            **M.observed(place["device"]),
        }
    except BaseException as exc:  # report any load failure, then exit distinctly
        msg = str(exc) if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
        say(f"ringserve worker {spec['label']}: load failed: {msg}")
        if not isinstance(exc, LoadFailed):
            say_exception()
        control.send(ctl, {"t": "failed", "message": msg})
        os._exit(EXIT_LOAD_FAILED)
    control.send(ctl, info)
    code = serve(spec, held, req, resp, M)
    say_flush()
    # Skip TensorFlow's slow teardown; nothing here needs it.
    os._exit(code)


def _entries(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The model versions to load: a group's list, or the one model of the spec."""
    if "models" in spec:
        return list(spec["models"])
    return [{"name": spec["model"], "version": spec["version"], "path": spec["path"]}]


def serve(spec: dict[str, Any], held: Held, req: Ring, resp: Ring, M: Any) -> int:
    req_efd, resp_efd = int(spec["req_efd"]), int(spec["resp_efd"])
    parent = int(spec["parent_pid"])
    words = req.words
    waiter = wake.Waiter(
        req_efd, req.readable, req.words, max_spin_us=int(spec.get("max_spin_us", 1000))
    )
    clock = time.monotonic_ns
    while True:
        words[layout.W_BEAT] = clock()
        if not waiter.wait(1.0):
            if os.getppid() != parent:
                return EXIT_ORPHANED
            continue
        try:
            rec = req.peek()
        except RingCorrupt as exc:
            say(f"ringserve worker {spec['label']}: {exc}")
            return EXIT_CORRUPT
        if rec is None:
            # Only a wrap pad was there: skipping it freed room the frontend may wait for.
            wake.ring_doorbell(resp.words, resp_efd)
            continue
        if rec.kind == layout.KIND_STOP:
            req.release()
            return EXIT_OK
        t0 = time.perf_counter_ns()
        try:
            head, inputs = records.read(rec.payload)
        except RingCorrupt as exc:
            say(f"ringserve worker {spec['label']}: {exc}")
            return EXIT_CORRUPT
        if len(head) < 4 or type(head[0]) is not int:
            say(f"ringserve worker {spec['label']}: request head {head[:4]!r}")
            return EXIT_CORRUPT
        rid, sig_name, wanted, deadline = head[0], head[1], head[2], head[3]
        if type(deadline) is not float and type(deadline) is not int:
            deadline = 0.0
        if deadline and time.monotonic() > deadline:
            # Expired while waiting in the ring: never computed (busy -1 says so).
            msg = "field 'timeout_ms': deadline passed in the worker's queue; not computed"
            _respond(resp, resp_efd, [rid, "DEADLINE_EXCEEDED", msg, -1], [], parent)
            req.release()
            wake.ring_doorbell(resp.words, resp_efd)
            continue
        words[layout.W_BEAT] = clock()  # idle time before a request is not hang time
        words[layout.W_BUSY] = rid
        outputs: list[records.TensorSpec] = []
        code, message = "", ""
        t1 = t2 = 0
        try:
            loaded, _ = held.target(head)
            sig = loaded.signatures[sig_name]
            args = sig.prepare(inputs)
            t1 = time.perf_counter_ns()
            result = sig.run(args)
            del args
            t2 = time.perf_counter_ns()
            names = wanted if wanted else sorted(result)
            for name in names:
                a = M.to_numpy(result[name])
                dt = "string" if a.dtype.kind in "OSU" else a.dtype.name
                if dt not in DTYPE_CODES:
                    raise TypeError(f"output {name!r} has dtype {dt}, which the protocol lacks")
                chunks = list(a.reshape(-1)) if dt == "string" else [a]
                outputs.append((name, dt, a.shape, chunks))
        except RequestError as exc:
            code, message, outputs = exc.code, exc.message, []
        except TypeError as exc:
            code, message, outputs = "INTERNAL", f"{exc}", []
        except Exception as exc:
            code, message = M.tf_error_code(exc), f"{type(exc).__name__}: {exc}"
            outputs = []
        del inputs
        t3 = time.perf_counter_ns()
        # busy, then its phases: reading the record and making input tensors, the
        # call, and turning outputs into arrays (Triton's compute_input/infer/output).
        head = [rid, code, message, t3 - t0]
        if t2:
            head += [t1 - t0, t2 - t1, t3 - t2]
        _respond(resp, resp_efd, head, outputs, parent)
        words[layout.W_BUSY] = 0
        req.release()
        wake.ring_doorbell(resp.words, resp_efd)


def _respond(
    resp: Ring, efd: int, head: list[Any], outputs: list[records.TensorSpec], parent: int
) -> None:
    try:
        while records.write(resp, layout.KIND_RESPONSE, head, outputs) is None:
            # The frontend drains responses continuously; a full ring means it is slow.
            wake.signal(efd)
            time.sleep(0.0002)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)
    except RecordTooLarge as exc:
        head = [head[0], "RESOURCE_EXHAUSTED", f"outputs: {exc}", head[3]]
        while records.write(resp, layout.KIND_RESPONSE, head, []) is None:
            time.sleep(0.0002)
