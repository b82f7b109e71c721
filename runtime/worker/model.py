"""A loaded SavedModel version: signature metadata, warm-up and the call. Imports TF.

Import this module only after `main.configure_process` has set the environment.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ringserve.ipc.tensors import DTYPE_CODES, STRING

from .say import say

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def configure(intra: int, inter: int, device: str, mem_mb: int, mem_frac: float) -> None:
    """Threads and GPU memory; must run before TensorFlow creates its context."""
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    if device.startswith("gpu:"):
        for gpu in tf.config.list_physical_devices("GPU"):
            limit = mem_mb
            if not limit and mem_frac:
                info = tf.config.experimental.get_device_details(gpu)
                total = info.get("memory_limit_bytes") or 0
                limit = int(total * mem_frac / 2**20) if total else 0
            if limit:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)


def observed(device: str) -> dict[str, Any]:
    """Settings as TensorFlow inside this process reports them."""
    gpus = tf.config.list_logical_devices("GPU")
    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "device": device if (gpus or device == "cpu") else "cpu",
        "tf_devices": [d.name for d in tf.config.list_logical_devices()],
        "visible_gpus": [d.name for d in gpus],
        "memory_growth": [
            bool(tf.config.experimental.get_memory_growth(g))
            for g in tf.config.list_physical_devices("GPU")
        ],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "tf_version": tf.__version__,
    }


def _dtype(dt: tf.DType) -> str | None:
    if dt == tf.string:
        return STRING
    try:
        name = np.dtype(dt.as_numpy_dtype).name
    except TypeError:
        return None
    return name if name in DTYPE_CODES else None


def _shape(shape: tf.TensorShape) -> list[int] | None:
    if shape.rank is None:
        return None
    return [-1 if d is None else int(d) for d in shape.as_list()]


class Signature:
    def __init__(self, name: str, fn: Any) -> None:
        self.name = name
        self.fn = fn
        _, kwargs = fn.structured_input_signature
        self.inputs = {k: (_dtype(s.dtype), _shape(s.shape)) for k, s in sorted(kwargs.items())}
        outs = fn.structured_outputs
        self.outputs = {k: (_dtype(s.dtype), _shape(s.shape)) for k, s in sorted(outs.items())}
        self.tf_dtypes = {k: s.dtype for k, s in kwargs.items()}
        # (flat call, input names in flat order, captured inputs, output names) once
        # `try_flat_call` has proven it; None: the public call.
        self._flat: tuple[Any, list[str], list[Any], list[str]] | None = None

    @property
    def call_path(self) -> str:
        return "flat" if self._flat is not None else "public"

    def metadata(self) -> dict[str, Any]:
        def m(d: dict[str, tuple[str | None, list[int] | None]]) -> dict[str, Any]:
            return {k: {"dtype": dt, "shape": sh} for k, (dt, sh) in d.items() if dt is not None}

        return {"inputs": m(self.inputs), "outputs": m(self.outputs)}

    def __call__(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
        return self.run(self.prepare(inputs))

    def prepare(self, inputs: dict[str, np.ndarray[Any, Any]]) -> Any:
        """The input tensors TensorFlow will take (Triton's compute_input)."""
        dtypes = self.tf_dtypes
        flat = self._flat
        if flat is not None:
            return [tf.constant(inputs[k], dtype=dtypes[k]) for k in flat[1]]
        return {k: tf.constant(v, dtype=dtypes[k]) for k, v in inputs.items()}

    def run(self, args: Any) -> dict[str, Any]:
        """The call itself on what `prepare` made (Triton's compute_infer)."""
        flat = self._flat
        if flat is not None:
            call, _, captured, names = flat
            return dict(zip(names, call(*args, *captured), strict=True))
        return self.fn(**args)  # type: ignore[no-any-return]

    def try_flat_call(self) -> bool:
        """Switch to the signature's flat call if it answers exactly as the public one.

        `signatures[name](**kw)` binds and checks its arguments, watches for gradient
        tapes and packs the outputs in Python on every call: about 120 us of the demo
        MLP's 360 us at batch 1 (perf/RESULTS.md). The frontend has already checked
        names, dtypes and shapes against the same signature, so the worker can call
        the function's flat form directly. That form is private TensorFlow API: it is
        used only when a call on probe inputs (distinct random values per input, so
        a wrong argument order shows) gives bit-identical outputs under the same names;
        otherwise, on any error, or on a TensorFlow that lacks it, the public call stays.
        A function with ops that change state (variable assignment, random numbers,
        table inserts, ...) is never probed: it keeps the public call.
        """
        fn = self.fn
        self._flat = None
        try:
            if _mutates_state(fn):
                return False  # a probe call would change what the model computes later
            order = list(fn._arg_keywords)
            call = fn._inference_function.call_flat
            if getattr(fn.graph, "deferred_external_captures", None):
                return False  # captures re-evaluated on every call: cannot be frozen
            captured = list(fn.captured_inputs)
            names = sorted(fn.structured_outputs)
            if sorted(order) != sorted(self.tf_dtypes) or len(order) != len(self.tf_dtypes):
                return False
            # The graph's own placeholders must carry the inputs in that order.
            placeholders = [t.name.split(":")[0] for t in fn.inputs[: len(order)]]
            if placeholders != order:
                return False
            if not all(isinstance(c, tf.Tensor) for c in captured):
                return False  # distributed variables need the wrapper's handle mapping
            probe = self.probe_inputs()
            want = self(probe)
            self._flat = (call, order, captured, names)
            got = self(probe)
        except Exception:
            self._flat = None
            return False
        if set(want) != set(got) or not all(_same(want[k], got[k]) for k in want):
            self._flat = None
        return self._flat is not None

    def probe_inputs(self, batch: int = 2) -> dict[str, np.ndarray[Any, Any]]:
        """Seeded inputs that differ from one input to the next (small non-negative
        integers, so an index input stays in range)."""
        rng = np.random.default_rng(1234)
        out = self.example_inputs(batch)
        for i, a in enumerate(out.values()):
            # Each input its own offset, so two inputs of one dtype and shape never hold
            # the same values (a swap would then go unseen).
            if a.dtype == object:
                a.flat[:] = [b"%d-%d" % (i, rng.integers(0, 4)) for _ in range(a.size)]
            elif a.dtype.kind == "f":
                a[...] = rng.standard_normal(a.shape) + i
            elif a.dtype.kind in "iu":
                a[...] = (rng.integers(0, 4, a.shape) + i) % 8
            elif a.dtype.kind == "b":
                a[...] = rng.integers(0, 2, a.shape).astype(bool)
        return out

    def example_inputs(self, batch: int = 1) -> dict[str, np.ndarray[Any, Any]]:
        out: dict[str, np.ndarray[Any, Any]] = {}
        for k, (dt, sh) in self.inputs.items():
            shape = [batch if d == -1 else d for d in sh] if sh is not None else [batch]
            if dt == STRING:
                a = np.empty(shape, dtype=object)
                a.fill(b"")
                out[k] = a
            else:
                out[k] = np.zeros(shape, dtype=dt or "float32")
        return out


class LoadedModel:
    def __init__(self, path: Path) -> None:
        t0 = time.perf_counter()
        self.path = path
        self.obj = tf.saved_model.load(str(path))
        self.signatures = {n: Signature(n, f) for n, f in self.obj.signatures.items()}
        self.load_seconds = time.perf_counter() - t0

    def metadata(self) -> dict[str, Any]:
        return {n: s.metadata() for n, s in self.signatures.items()}

    def warmup(self) -> int:
        """Run every signature once on derived inputs, then TF Serving's warm-up records."""
        runs = 0
        for name, sig in self.signatures.items():
            try:
                sig(sig.example_inputs())
                runs += 1
            except Exception as exc:  # the model may reject zeros; a real call will tell
                say(f"ringserve worker: warm-up of {name!r} on zeros: {exc}")
        runs += self._tf_serving_warmup()
        for sig in self.signatures.values():
            sig.try_flat_call()
        return runs

    def call_paths(self) -> dict[str, str]:
        return {n: s.call_path for n, s in self.signatures.items()}

    def _tf_serving_warmup(self) -> int:
        path = self.path / WARMUP_FILE
        if not path.exists():
            return 0
        from .warmup import read_predict_requests

        runs = 0
        for sig_name, inputs in read_predict_requests(path):
            sig = self.signatures.get(sig_name or "serving_default")
            if sig is not None:
                sig(inputs)
                runs += 1
        return runs


# Op types that change state or draw random numbers, by name: conservative on purpose
# (a false match only keeps the public call).
_MUTATING = re.compile(
    r"Assign|Scatter|Apply|Random|Multinomial|Insert|Import|Enqueue|Dequeue|Write|Save|"
    r"Restore|Remove|Print|Update|Push|Accumulat|Barrier|Stack|Shuffle|Seed|Generator|"
    r"TruncatedNormal|Stateful(?!PartitionedCall)|Rng|Iterator|CountUpTo"
)


def _mutates_state(fn: Any) -> bool:
    graph = fn.graph.as_graph_def()
    ops = {n.op for n in graph.node}
    for f in graph.library.function:
        ops.update(n.op for n in f.node_def)
    return any(_MUTATING.search(op) for op in ops)


def _same(a: Any, b: Any) -> bool:
    x, y = to_numpy(a), to_numpy(b)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))


def to_numpy(t: Any) -> np.ndarray[Any, Any]:
    a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    a = np.asarray(a)
    # Not ascontiguousarray: it turns a scalar (shape []) into shape [1].
    return a if a.flags.c_contiguous else a.copy(order="C")


def tf_error_code(exc: BaseException) -> str:
    if isinstance(exc, (tf.errors.InvalidArgumentError, ValueError, TypeError)):
        return "INVALID_ARGUMENT"
    if isinstance(exc, tf.errors.ResourceExhaustedError):
        return "RESOURCE_EXHAUSTED"
    return "INTERNAL"
