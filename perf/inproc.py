"""The in-process floor: the public TensorFlow signature call, timed in a child process.

What is timed is exactly `loaded.signatures["serving_default"](x=tf.constant(x))`
(`.numpy()` of the outputs is done after the clock stops): the call a served request
is compared against. The child is configured the way a ringserve worker configures
itself (CPU affinity and TF thread counts set before TensorFlow starts, through the
worker's own functions when they are importable) so the two are on equal terms.

The benchmarks keep one child alive and ask it for a repetition between their served
runs (`FloorChild.time`), so floor and served figures come from the same minutes of
the same noisy machine. This process never imports TensorFlow.

CLI: python perf/inproc.py [--models demo,linear] [--batch 1,32] [--pin none|same|split]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import benchcli as C
import benchlib as B
import numpy as np

HERE = Path(__file__).resolve()


# ---- parent side -----------------------------------------------------------------------


class FloorChild:
    """A long-lived TF child holding loaded models; answers timing requests."""

    def __init__(
        self,
        models: Mapping[str, str | Path],
        *,
        cpus: frozenset[int] | None = None,
        intra: int = 1,
        inter: int = 1,
        signature: str = "serving_default",
        log_dir: str | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        spec = {
            "models": {k: str(v) for k, v in models.items()},
            "cpus": sorted(cpus) if cpus is not None else None,
            "intra": intra,
            "inter": inter,
            "signature": signature,
        }
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="rsbench-inproc-")
        self.log_path = Path(log_dir or self._tmp.name) / f"inproc-{os.getpid()}.log"  # type: ignore[union-attr]
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--child-serve", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self.info = self._read(start_timeout)
        if self.info.get("t") != "ready":
            raise RuntimeError(f"in-process child failed: {self.info}\n{B.tail(self.log_path)}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError(f"in-process child silent for {timeout}s\n{B.tail(self.log_path)}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"in-process child exited\n{B.tail(self.log_path)}")
        return json.loads(line)  # type: ignore[no-any-return]

    def time(
        self,
        model: str,
        npy: str | Path,
        *,
        n: int = 2000,
        warmup: int = 200,
        budget_s: float = 20,
        gap_us: float = 0.0,
        path: str = "public",
    ) -> dict[str, Any]:
        """One repetition: `n` sequential calls (at most `budget_s` seconds) on the array in
        `npy`. Returns p50_us, p90_us, p99_us, mean_us, calls_per_s, rows_per_s, cpus.

        `gap_us` > 0 sleeps that long before each call (outside the clock): the call as a
        server worker makes it after waiting for a request. `path="worker"` times the
        call the way ringserve's worker makes it (its verified flat form) instead of
        the public signature call."""
        assert self.proc.stdin is not None
        cmd = {
            "model": model,
            "input": str(npy),
            "n": n,
            "warmup": warmup,
            "budget_s": budget_s,
            "gap_us": gap_us,
            "path": path,
        }
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        out = self._read(budget_s + 60)
        if "error" in out:
            raise RuntimeError(f"in-process child: {out['error']}")
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, OSError, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FloorChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_models(root: str | Path, log_dir: str | None = None) -> dict[str, Path]:
    """Build the demo MLP and the linear model under `root` in a TF child process.

    Returns the version folders: {"demo": root/demo/1, "linear": root/linear/1}.
    """
    log = Path(log_dir or root) / "build.log"
    with open(log, "wb") as f:
        r = subprocess.run(
            [sys.executable, str(HERE), "--child-build", str(root)],
            stdout=subprocess.PIPE,
            stderr=f,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=600,
        )
    if r.returncode != 0:
        raise RuntimeError(f"building models failed ({r.returncode})\n{B.tail(log)}")
    paths = json.loads(r.stdout.decode().strip().splitlines()[-1])
    return {k: Path(v) for k, v in paths.items()}


def model_base(version_dir: Path) -> Path:
    """The base_path (the folder of numbered versions) of a version folder."""
    return version_dir.parent


# ---- child side ------------------------------------------------------------------------

LINEAR_SEED = 7


def _child_build(root: str) -> None:
    import tensorflow as tf

    from ringserve.runtime.worker import demo_model

    class Linear(tf.Module):
        """float32 x[-1, 16] -> y[-1, 4], fixed seed."""

        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(LINEAR_SEED)
            self.w = tf.Variable(rng.standard_normal((16, 4)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(4).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.matmul(x, self.w) + self.b}

    out = {"demo": str(demo_model.build(Path(root) / "demo"))}
    lin = Path(root) / "linear" / "1"
    if not (lin / "saved_model.pb").exists():
        m = Linear()
        tmp = Path(root) / "linear" / ".1.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tf.saved_model.save(m, str(tmp), signatures={"serving_default": m.serve})
        tmp.rename(lin)
    out["linear"] = str(lin)
    print(json.dumps(out), flush=True)


def _configure_like_worker(cpus: list[int] | None, intra: int, inter: int) -> str:
    """Affinity and thread settings as the worker applies them; returns how."""
    place = {
        "cpu_affinity": cpus or [],
        "device": "cpu",
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "gpu_memory_mb": 0,
        "gpu_memory_fraction": 0.0,
    }
    how = "ringserve.runtime.worker"
    try:
        from ringserve.runtime.worker.main import configure_process

        configure_process({"placement": place})
    except Exception:  # the worker's API moved: do the same by hand
        how = "local copy"
        if cpus:
            os.sched_setaffinity(0, cpus)
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(intra)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(inter)
    try:
        from ringserve.runtime.worker import model as M

        M.configure(intra, inter, "cpu", 0, 0.0)
    except Exception:
        import tensorflow as tf

        how += " (threads set locally)"
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    return how


def _worker_call(signature: str, fn: Any) -> Any:
    """`fn` called the way a ringserve worker calls it (runtime/worker/model.py: the
    flat form once verified, else the public call), taking keyword tensors like `fn`;
    None when ringserve's worker module is not importable."""
    try:
        from ringserve.runtime.worker.model import Signature
    except ImportError:
        return None
    sig = Signature(signature, fn)
    sig.try_flat_call()
    call = lambda **kw: sig(kw)  # noqa: E731
    call.call_path = sig.call_path  # type: ignore[attr-defined]
    return call


def _child_serve(spec: dict[str, Any]) -> None:
    B.die_with_parent()
    how = _configure_like_worker(spec["cpus"], spec["intra"], spec["inter"])
    import tensorflow as tf

    fns: dict[str, Any] = {}
    flats: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, path in spec["models"].items():
        fn = tf.saved_model.load(path).signatures[spec["signature"]]
        _, kwargs = fn.structured_input_signature
        if len(kwargs) != 1:
            raise SystemExit(f"{name}: expected one input, the signature has {sorted(kwargs)}")
        fns[name] = fn
        names[name] = next(iter(kwargs))
        flats[name] = _worker_call(spec["signature"], fn)
    out = sys.stdout
    out.write(
        json.dumps(
            {
                "t": "ready",
                "pid": os.getpid(),
                "configured_by": how,
                "affinity": sorted(os.sched_getaffinity(0)),
                "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter": tf.config.threading.get_inter_op_parallelism_threads(),
                "tf": tf.__version__,
            }
        )
        + "\n"
    )
    out.flush()
    clock = time.perf_counter_ns
    const = tf.constant
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            fn = fns[cmd["model"]]
            arg = names[cmd["model"]]
            if cmd.get("path") == "worker":
                # The worker's own call (its verified flat form, when it chose that).
                fn = flats[cmd["model"]]
                if fn is None:
                    raise RuntimeError("ringserve's worker call is not importable here")
            x = np.load(cmd["input"])
            n, warm = int(cmd["n"]), int(cmd["warmup"])
            budget = int(float(cmd.get("budget_s", 20)) * 1e9)
            gap = float(cmd.get("gap_us", 0)) / 1e6
            for _ in range(warm):
                fn(**{arg: const(x)})
            lat = np.empty(n, dtype=np.int64)
            cpus: dict[int, int] = {}
            t_start = clock()
            stop = t_start + budget
            i = 0
            while i < n:
                if gap:
                    time.sleep(gap)
                t0 = clock()
                r = fn(**{arg: const(x)})
                t1 = clock()
                lat[i] = t1 - t0
                i += 1
                if i % 64 == 1:
                    c = B.sched_getcpu()
                    cpus[c] = cpus.get(c, 0) + 1
                    if t1 > stop:
                        break
            wall = (clock() - t_start) / 1e9
            for v in r.values():
                v.numpy()
            p = B.percentiles(lat[:i] / 1e3)
            reply = {
                "model": cmd["model"],
                "call_path": getattr(fn, "call_path", "public"),
                "gap_us": float(cmd.get("gap_us", 0)),
                "batch": int(x.shape[0]) if x.ndim else 1,
                "n": i,
                "p50_us": p["p50"],
                "p90_us": p["p90"],
                "p99_us": p["p99"],
                "mean_us": p["mean"],
                "calls_per_s": i / wall,
                "rows_per_s": i * (int(x.shape[0]) if x.ndim else 1) / wall,
                "cpus": cpus,
            }
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---- CLI -------------------------------------------------------------------------------


def make_inputs(root: Path, batches: list[int], seed: int = 0) -> dict[tuple[str, int], Path]:
    """Seeded float32 inputs for demo (784) and linear (16) per batch, saved as .npy."""
    rng = np.random.default_rng(seed)
    out = {}
    for model, width in (("demo", 784), ("linear", 16)):
        base = rng.standard_normal((max(batches), width)).astype(np.float32)
        for b in batches:
            p = root / f"{model}-b{b}.npy"
            np.save(p, np.ascontiguousarray(base[:b]))
            out[(model, b)] = p
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python perf/inproc.py",
        description="Time the public in-process TF signature call (the floor a served "
        "request is compared against) on the demo MLP and the linear model.",
    )
    p.add_argument("--models", default="demo,linear", help="demo,linear (default both)")
    p.add_argument("--batch", default="1,32", help="batch sizes (default 1,32)")
    p.add_argument("--calls", type=int, default=2000, help="calls per repetition at batch 1")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; medians (default 3)")
    p.add_argument("--pin", default="none", choices=B.PIN_MODES, help="pin like a worker")
    p.add_argument(
        "--gap-us",
        type=float,
        default=1000.0,
        help="also time batch 1 with this idle sleep before each call, as a worker waiting "
        "for requests makes it (default 1000; 0: off)",
    )
    p.add_argument("--intra", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--inter", type=int, default=1, help="inter-op threads (default 1)")
    C.add_quick_json_args(p)
    p.add_argument("--child-build", help=argparse.SUPPRESS)
    p.add_argument("--child-serve", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_build:
        _child_build(args.child_build)
        return 0
    if args.child_serve:
        _child_serve(json.loads(args.child_serve))
        return 0
    C.apply_quick(args, calls=200)
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batch.split(",") if b]
    plan = B.pin_plan(args.pin)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rsbench-inproc-") as tmp:
        paths = build_models(tmp)
        inputs = make_inputs(Path(tmp), batches)
        with FloorChild(
            {m: paths[m] for m in models},
            cpus=plan.worker,
            intra=args.intra,
            inter=args.inter,
            log_dir=tmp,
        ) as child:
            for _ in range(args.repeat):
                for m in models:
                    for b in batches:
                        n = max(20, args.calls // b)
                        rows.append(child.time(m, inputs[(m, b)], n=n, warmup=min(100, n)))
                    if args.gap_us > 0:
                        n = max(20, args.calls // 4)
                        rows.append(
                            child.time(m, inputs[(m, 1)], n=n, warmup=20, gap_us=args.gap_us)
                        )
            info = child.info
    table = []
    kinds = [(b, 0.0) for b in batches] + ([(1, args.gap_us)] if args.gap_us > 0 else [])
    for m in models:
        for b, gap in kinds:
            rs = [r for r in rows if r["model"] == m and r["batch"] == b and r["gap_us"] == gap]
            med = B.median_dicts(rs)
            cpus: dict[int, int] = {}
            for r in rs:
                for k, v in r["cpus"].items():
                    cpus[int(k)] = cpus.get(int(k), 0) + v
            table.append(
                [
                    m,
                    f"{b} (after {gap:.0f} us idle)" if gap else b,
                    B.fmt(med["p50_us"]),
                    B.fmt(med["p90_us"]),
                    B.fmt(med["p99_us"]),
                    "-" if gap else B.fmt(med["calls_per_s"], 0),
                    "-" if gap else B.fmt(med["rows_per_s"], 0),
                    B.cpu_hist(cpus),
                ]
            )
    print(
        f"in-process `signatures['serving_default'](x=tf.constant(x))`, TF {info['tf']}, "
        f"pin {args.pin} (affinity {info['affinity']}), intra {info['intra']} inter "
        f"{info['inter']}, configured by {info['configured_by']}; median of {args.repeat}\n"
    )
    print(
        B.md_table(
            ["model", "batch", "p50 us", "p90 us", "p99 us", "calls/s", "rows/s", "cpus seen"],
            table,
        )
    )
    C.write_json(
        args.json,
        {"machine": B.machine_info(), "command": B.command_line(), "child": info, "runs": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
