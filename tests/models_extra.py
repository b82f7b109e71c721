"""More small SavedModels for the worker, version and signature tests. Imports TensorFlow.

Built once per session into the pytest base temp folder (see `build_extra`), in the
test process, never the server's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import tensorflow as tf

TAGS = (1, 2, 3, 4)
COUNTER_SIGNATURES = ("serving_default", "ints", "strs", "more")


class Tagged(tf.Module):
    """float32 x[-1, 4] -> y = x * tag + tag, and `tag` (int32[-1]) naming the build.

    One build per version number, so a reply shows which SavedModel computed it."""

    def __init__(self, tag: int) -> None:
        super().__init__()
        self.tag = tf.Variable(float(tag), trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.shape(x)[0]
        return {
            "y": x * self.tag + self.tag,
            "tag": tf.fill([rows], tf.cast(self.tag, tf.int32)),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="x"),
            tf.TensorSpec([], tf.int32, name="n"),
        ]
    )
    def slow(self, x: tf.Tensor, n: tf.Tensor) -> dict[str, tf.Tensor]:
        """`n` iterations of a small matmul (about 5 us each): a request as long as asked."""
        m = tf.eye(4) * 0.5

        def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.matmul(acc, m) + x

        _, out = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), x))
        return {"y": out, "tag": tf.fill([tf.shape(x)[0]], tf.cast(self.tag, tf.int32))}


class Sigs(tf.Module):
    """Several signatures over every wire dtype, fixed and unknown dimensions."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"total": tf.reduce_sum(x, axis=1)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="s"),
            tf.TensorSpec([None], tf.int64, name="n"),
        ]
    )
    def strings(self, s: tf.Tensor, n: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "joined": tf.strings.join([s, tf.strings.as_string(n)], separator=":"),
            "length": tf.strings.length(s),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([2, 3], tf.uint8, name="m"),
            tf.TensorSpec([2], tf.bool, name="flags"),
        ]
    )
    def fixed(self, m: tf.Tensor, flags: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"t": tf.transpose(m), "none": tf.logical_not(flags)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.float64, name="a"),
            tf.TensorSpec([None, None], tf.float16, name="h"),
        ]
    )
    def scalar(self, a: tf.Tensor, h: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"a2": a * 2.0, "hsum": tf.reduce_sum(h, axis=1)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int8, name="i8"),
            tf.TensorSpec([None], tf.int16, name="i16"),
            tf.TensorSpec([None], tf.uint16, name="u16"),
            tf.TensorSpec([None], tf.uint32, name="u32"),
            tf.TensorSpec([None], tf.uint64, name="u64"),
        ]
    )
    def widths(
        self, i8: tf.Tensor, i16: tf.Tensor, u16: tf.Tensor, u32: tf.Tensor, u64: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return {
            "i8": tf.identity(i8),
            "i16": tf.identity(i16),
            "u16": tf.identity(u16),
            "u32": tf.identity(u32),
            "u64": tf.identity(u64),
        }

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name="u")])
    def anyrank(self, u: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"u1": u + 1}


SIGS_SIGNATURES = ("serving_default", "strings", "fixed", "scalar", "widths", "anyrank")


class Counter(tf.Module):
    """Stateful: every call adds what it was given to counters and returns them all.

    After warm-up the counters hold what the warm-up runs fed in, so a test can see
    which warm-up inputs reached the model, and how many calls there were."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.f = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.i = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.s = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.m = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def _state(self) -> dict[str, tf.Tensor]:
        return {
            "calls": self.calls.read_value(),
            "f": self.f.read_value(),
            "i": self.i.read_value(),
            "s": self.s.read_value(),
            "m": self.m.read_value(),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        self.calls.assign_add(1)
        self.f.assign_add(tf.reduce_sum(tf.cast(x, tf.float64)))
        return self._state()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="n"),
            tf.TensorSpec([None, 2], tf.int64, name="k"),
        ]
    )
    def ints(self, n: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        self.calls.assign_add(1)
        self.i.assign_add(tf.reduce_sum(tf.cast(n, tf.int64)) + tf.reduce_sum(k))
        return self._state()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
    def strs(self, s: tf.Tensor) -> dict[str, tf.Tensor]:
        self.calls.assign_add(1)
        self.s.assign_add(tf.cast(tf.reduce_sum(tf.strings.length(s)), tf.int64))
        return self._state()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float16, name="h"),
            tf.TensorSpec([None], tf.float64, name="d"),
            tf.TensorSpec([None], tf.bool, name="b"),
            tf.TensorSpec([None], tf.uint8, name="u"),
        ]
    )
    def more(self, h: tf.Tensor, d: tf.Tensor, b: tf.Tensor, u: tf.Tensor) -> dict[str, tf.Tensor]:
        self.calls.assign_add(1)
        total = (
            tf.reduce_sum(tf.cast(h, tf.float64))
            + tf.reduce_sum(d)
            + tf.reduce_sum(tf.cast(b, tf.float64)) * 1000.0
            + tf.reduce_sum(tf.cast(u, tf.float64)) * 1e6
        )
        self.m.assign_add(total)
        return self._state()


def _save(module: tf.Module, path: Path, signatures: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures=signatures)


def build_extra(root: Path) -> Path:
    """Build every model once under `root` (skipped when already built); return root.

    root/tagged/<tag>  Tagged(tag) for every tag in TAGS (copy one in as a version)
    root/sigs          Sigs
    root/counter       Counter (no warm-up file: the test adds its own)
    """
    done = root / ".built"
    if done.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    for tag in TAGS:
        m = Tagged(tag)
        _save(m, root / "tagged" / str(tag), {"serving_default": m.serve, "slow": m.slow})
    s = Sigs()
    _save(
        s,
        root / "sigs",
        {
            "serving_default": s.default,
            "strings": s.strings,
            "fixed": s.fixed,
            "scalar": s.scalar,
            "widths": s.widths,
            "anyrank": s.anyrank,
        },
    )
    c = Counter()
    _save(
        c,
        root / "counter",
        {"serving_default": c.serve, "ints": c.ints, "strs": c.strs, "more": c.more},
    )
    done.write_text(str(os.getpid()))
    return root


def copy_version(src: Path, base: Path, version: int | str) -> Path:
    """Copy a SavedModel folder into base/<version> atomically: a temp name, then rename."""
    tmp = base / f".incoming-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    dst = base / str(version)
    os.rename(tmp, dst)
    return dst
