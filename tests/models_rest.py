"""Models shaped like TF Serving's REST examples, built by the REST tests. Imports
TensorFlow (the test process only, never the server's)."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from models import save


class HalfPlusTwo(tf.Module):
    """TF Serving's half_plus_two: y = x / 2 + 2, float32 x[-1]."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 0.5 + 2.0}


class Tagged(tf.Module):
    """The named inputs of TF Serving's REST documentation: tag (string), signal
    (int32 [5]), sensor (float32 [2, 2]); a text, a bytes and a numeric output."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="tag"),
            tf.TensorSpec([None, 5], tf.int32, name="signal"),
            tf.TensorSpec([None, 2, 2], tf.float32, name="sensor"),
        ]
    )
    def serve(self, tag: tf.Tensor, signal: tf.Tensor, sensor: tf.Tensor) -> dict[str, tf.Tensor]:
        total = tf.cast(tf.reduce_sum(signal, axis=1), tf.float32)
        return {
            "score": total + tf.reduce_sum(sensor, axis=[1, 2]),
            "label": tf.strings.upper(tag),
            "tag_bytes": tf.strings.join([tag, tf.constant(b"\xff")]),
        }


def build(root: Path) -> dict[str, Path]:
    hpt, tagged = HalfPlusTwo(), Tagged()
    save(hpt, root / "half_plus_two" / "1", {"serving_default": hpt.serve})
    save(hpt, root / "half_plus_two" / "2", {"serving_default": hpt.serve})
    save(tagged, root / "tagged" / "1", {"serving_default": tagged.serve})
    return {"half_plus_two": root / "half_plus_two", "tagged": root / "tagged"}
