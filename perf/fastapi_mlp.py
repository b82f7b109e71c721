"""What a user writes when they leave TF Serving: FastAPI + uvicorn, TensorFlow in
process, the same JSON predict as TF Serving's REST API. bench_rest.py compares
ringserve's REST API against it. Needs the `perf` extra (fastapi, uvicorn).

    MODEL_DIR=/path/to/1 python perf/fastapi_mlp.py PORT
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf
import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()
_fn = tf.saved_model.load(os.environ["MODEL_DIR"]).signatures["serving_default"]
_input = next(iter(_fn.structured_input_signature[1]))


@app.post("/v1/models/demo:predict")
async def predict(request: Request) -> dict[str, object]:
    body = await request.json()
    x = np.asarray(body["instances"], dtype=np.float32)
    out = _fn(**{_input: tf.constant(x)})
    return {"predictions": next(iter(out.values())).numpy().tolist()}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
