"""Build MobileNetV2 (random weights, fixed seed) as a SavedModel, for tuning runs.

    python perf/build_mobilenet.py /tmp/models/mobilenet      # writes .../1/

`keras.applications.MobileNetV2(weights=None)`: the architecture only, nothing is
downloaded; the weights are Keras's seeded initialisation. The signature is
`serving_default`: `images` float32 [-1, 224, 224, 3] -> `probabilities` [-1, 1000]
(602 KB a request at batch 1). Imports TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SEED = 1234


def build(path: str | Path, version: int = 1, size: int = 224) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    out = Path(path) / str(version)
    if (out / "saved_model.pb").exists():
        return out
    tf.keras.utils.set_random_seed(SEED)
    model = tf.keras.applications.MobileNetV2(
        input_shape=(size, size, 3), weights=None, classes=1000
    )

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")]
        )
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probabilities": self.model(images, training=False)}

    m = Serving()
    tmp = Path(path) / f".{version}.tmp"
    tf.saved_model.save(m, str(tmp), signatures={"serving_default": m.serve})
    tmp.rename(out)  # appear whole: a server polling the folder never sees half of it
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("path", help="the model's base path; version 1 is written under it")
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    args = p.parse_args()
    print(build(args.path, size=args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
