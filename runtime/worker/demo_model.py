"""Build the built-in demo SavedModel: an MLP on 784 floats, fixed seed. Imports TF.

`python -m ringserve.runtime.worker.demo_model PATH` writes PATH/1/. Nothing is
downloaded: the weights come from a seeded generator.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

SEED = 1234
LAYERS = (784, 512, 512, 10)


class DemoMLP(tf.Module):
    def __init__(self, seed: int = SEED) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.ws = []
        self.bs = []
        for a, b in itertools.pairwise(LAYERS):
            w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
            self.ws.append(tf.Variable(w))
            self.bs.append(tf.Variable(np.zeros(b, np.float32)))

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        h = x
        for i, (w, b) in enumerate(zip(self.ws, self.bs, strict=True)):
            h = tf.matmul(h, w) + b
            if i < len(self.ws) - 1:
                h = tf.nn.relu(h)
        return {"logits": h, "probabilities": tf.nn.softmax(h)}


def build(path: str | Path, version: int = 1, seed: int = SEED) -> Path:
    """`seed` other than the default makes a distinct model of the same shape
    (perf/bench_groups.py serves twenty of them)."""
    out = Path(path) / str(version)
    if (out / "saved_model.pb").exists():
        return out
    m = DemoMLP(seed)
    tmp = Path(path) / f".{version}.tmp"
    tf.saved_model.save(m, str(tmp), signatures={"serving_default": m.serve})
    tmp.rename(out)  # appear whole: a watcher never sees a half-written version
    return out


def reference(path: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The in-process TensorFlow answer for `x`, through the same signature call."""
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(x=tf.constant(x)).items()}


if __name__ == "__main__":
    print(build(sys.argv[1]))
