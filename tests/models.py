"""Small SavedModels the tests build themselves, fixed seeds. Imports TensorFlow.

Run as `python -m` or imported by conftest in the test process (never the server's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

SEED = 7


class Linear(tf.Module):
    """float32 x[-1, 16] -> y[-1, 4]."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        rng = np.random.default_rng(SEED)
        self.w = tf.Variable((rng.standard_normal((16, 4)) * scale).astype(np.float32))
        self.b = tf.Variable(rng.standard_normal(4).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w) + self.b}


class Ints(tf.Module):
    """Two int64 inputs, two outputs; a second signature with one input."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.int64, name="a"),
            tf.TensorSpec([None, 3], tf.int64, name="b"),
        ]
    )
    def serve(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"sum": a + b, "prod": a * b, "total": tf.reduce_sum(a, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
    def double(self, n: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"twice": n * 2}


class Strings(tf.Module):
    """string s[-1] -> upper-cased strings and their lengths."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
    def serve(self, s: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"upper": tf.strings.upper(s), "length": tf.strings.length(s)}


class Slow(tf.Module):
    """Spins `n` iterations of a small matmul: a request that takes as long as asked."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="x"),
            tf.TensorSpec([], tf.int32, name="n"),
        ]
    )
    def serve(self, x: tf.Tensor, n: tf.Tensor) -> dict[str, tf.Tensor]:
        m = tf.eye(4) * 0.5

        def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.matmul(acc, m) + x

        _, out = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), x))
        return {"y": out}


class Paced(tf.Module):
    """float32 x[-1, 4] -> y = 2x + 1 after x[0, 0] iterations of a small loop: in a
    batch, the first row sets how long the call holds the worker."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        m = tf.eye(4) * 0.5
        n = tf.cast(x[0, 0], tf.int32)
        _, acc = tf.while_loop(
            lambda i, _: i < n, lambda i, a: (i + 1, tf.matmul(a, m)), (0, tf.ones([1, 4]))
        )
        return {"y": x * 2.0 + 1.0 + 0.0 * tf.reduce_sum(acc)}


class OffBy(tf.Module):
    """float32 x[-1, 4] -> y with one row more than x (a row of 7s, then 2x + 1): an
    output that is not batch-major."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.concat([tf.fill([1, 4], 7.0), x * 2.0 + 1.0], axis=0)}


ALL_DTYPES = {
    "bool": tf.bool,
    "int8": tf.int8,
    "int16": tf.int16,
    "int32": tf.int32,
    "int64": tf.int64,
    "uint8": tf.uint8,
    "uint16": tf.uint16,
    "uint32": tf.uint32,
    "uint64": tf.uint64,
    "float16": tf.float16,
    "float32": tf.float32,
    "float64": tf.float64,
    "string": tf.string,
}


class AllTypes(tf.Module):
    """One [-1, 2] input per protocol dtype, each returned as `<name>_out` (identity),
    plus a float32 sum, so batched and unbatched replies can be compared exactly."""

    def __init__(self) -> None:
        super().__init__()
        specs = [tf.TensorSpec([None, 2], dt, name=n) for n, dt in ALL_DTYPES.items()]

        def fn(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            out = {f"{n}_out": tf.identity(a) for n, a in zip(ALL_DTYPES, args, strict=True)}
            out["f32_sum"] = tf.reduce_sum(args[10], axis=1)
            return out

        self.serve = tf.function(fn, input_signature=specs)


def save(module: tf.Module, path: Path, signatures: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def build_all(root: Path) -> dict[str, Path]:
    """Base paths (holding version 1) of every test model."""
    lin = Linear()
    ints = Ints()
    st = Strings()
    slow = Slow()
    save(lin, root / "linear" / "1", {"serving_default": lin.serve})
    lin2 = Linear(scale=2.0)
    save(lin2, root / "linear2" / "1", {"serving_default": lin2.serve})
    save(lin2, root / "linear2" / "2", {"serving_default": lin2.serve})
    save(ints, root / "ints" / "1", {"serving_default": ints.serve, "double": ints.double})
    save(st, root / "strings" / "1", {"serving_default": st.serve})
    save(slow, root / "slow" / "1", {"serving_default": slow.serve})
    alltypes = AllTypes()
    save(alltypes, root / "alltypes" / "1", {"serving_default": alltypes.serve})
    paced, offby = Paced(), OffBy()
    save(paced, root / "paced" / "1", {"serving_default": paced.serve})
    save(offby, root / "offby" / "1", {"serving_default": offby.serve})
    names = ("linear", "linear2", "ints", "strings", "slow", "alltypes", "paced", "offby")
    return {n: root / n for n in names}


def reference(
    base: Path, inputs: dict[str, np.ndarray], signature: str = "serving_default", version: int = 1
) -> dict[str, np.ndarray]:
    fn = tf.saved_model.load(str(base / str(version))).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
