"""TF Serving's REST API on a real server, with TF Serving's documented requests,
`curl` and `requests`; outputs compared with in-process TensorFlow.

The server reads its REST models from a models.config written the way TF Serving
users write one."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess, free_port

from conftest import models_toml
from httpclient import RawHttp, curl
from models import reference

MODELS_CONFIG = """
model_config_list {
  config {
    name: 'half_plus_two'
    base_path: '%(root)s/half_plus_two'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 1
        versions: 2
      }
    }
    version_labels {
      key: 'stable'
      value: 1
    }
    version_labels {
      key: 'canary'
      value: 2
    }
  }
  config {
    name: 'tagged'
    base_path: '%(root)s/tagged'
    model_platform: 'tensorflow'
  }
}
"""

BATCH = """[models.batching]
max_batch_size = 8
batch_timeout_us = 20000
max_queue = 64
"""


class Rest:
    def __init__(self, proc: ServerProcess, port: int, root: Path, tests_root: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.root = root
        self.tests_root = tests_root


@pytest.fixture(scope="module")
def rest(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    from models_rest import build

    root = tmp_path_factory.mktemp("rest-models")
    build(root)
    cfg_dir = tmp_path_factory.mktemp("rest-config")
    (cfg_dir / "models.config").write_text(MODELS_CONFIG % {"root": root})
    port = free_port()
    proc = ServerProcess(
        models_toml(model_root, ["linear", "slow"], {"linear": BATCH}),
        f'http = "127.0.0.1:{port}"\nmodel_config_file = "{cfg_dir / "models.config"}"\n'
        "ring_bytes = 1048576\nmax_frame_bytes = 1048576",
    )
    with proc:
        # Ready means every model serves a version; these tests also read the states
        # of every version, so they wait until each has loaded (none is meant to fail).
        deadline = time.monotonic() + 120
        with Client(proc.unix_url) as c:
            while not all(
                v["state"] == "AVAILABLE" for m in c.models() for v in m["version_states"].values()
            ):
                assert time.monotonic() < deadline, f"versions not all loaded: {c.models()}"
                time.sleep(0.1)
        yield Rest(proc, port, root, model_root)


def post(rest: Rest, path: str, body: object) -> requests.Response:
    return requests.post(rest.url + path, data=json.dumps(body), timeout=60)


def test_half_plus_two_documented_example(rest: Rest) -> None:
    # TF Serving's REST documentation, verbatim.
    r = curl(
        "-d",
        '{"instances": [1.0, 2.0, 5.0]}',
        "-X",
        "POST",
        f"http://127.0.0.1:{rest.port}/v1/models/half_plus_two:predict",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"predictions": [2.5, 3.0, 4.5]}
    x = np.array([1.0, 2.0, 5.0], np.float32)
    want = reference(rest.root / "half_plus_two", {"x": x}, version=2)["y"]
    for path in ("", "/versions/1", "/labels/stable", "/labels/canary"):
        got = post(rest, f"/v1/models/half_plus_two{path}:predict", {"instances": x.tolist()})
        assert got.status_code == 200, got.text
        np.testing.assert_array_equal(np.array(got.json()["predictions"], np.float32), want)
    cols = post(rest, "/v1/models/half_plus_two:predict", {"inputs": {"x": [1.0, 2.0]}})
    assert cols.json() == {"outputs": [2.5, 3.0]}
    # Over 1 KiB curl asks `Expect: 100-continue` before sending the body.
    many = [float(i) for i in range(400)]
    r = curl(
        "-d",
        json.dumps({"instances": many}),
        f"http://127.0.0.1:{rest.port}/v1/models/half_plus_two:predict",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"predictions": [x * 0.5 + 2.0 for x in many]}


def test_status_and_metadata(rest: Rest) -> None:
    s = requests.get(rest.url + "/v1/models/half_plus_two", timeout=30).json()
    assert s == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    one = requests.get(rest.url + "/v1/models/half_plus_two/labels/stable", timeout=30).json()
    assert [v["version"] for v in one["model_version_status"]] == ["1"]
    meta = requests.get(rest.url + "/v1/models/linear/metadata", timeout=30).json()
    assert meta["model_spec"] == {"name": "linear", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["x"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "16", "name": ""},
    ]
    assert sig["outputs"]["y"]["tensor_shape"]["dim"][1]["size"] == "4"
    assert sig["method_name"] == "tensorflow/serving/predict"
    tagged = requests.get(rest.url + "/v1/models/tagged/versions/1/metadata", timeout=30).json()
    inputs = tagged["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {k: v["dtype"] for k, v in inputs.items()} == {
        "tag": "DT_STRING",
        "signal": "DT_INT32",
        "sensor": "DT_FLOAT",
    }
    for path, code in (
        ("/v1/models/nosuch", 404),
        ("/v1/models/half_plus_two/versions/7", 404),
        ("/v1/models/half_plus_two/labels/nosuch", 404),
        ("/v1/models/half_plus_two/versions/x", 400),
    ):
        r = requests.get(rest.url + path, timeout=30)
        assert r.status_code == code, (path, r.text)
        assert set(r.json()) == {"error"}


DOC_ROWS = {
    "instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
    ]
}
DOC_COLUMNS = {
    "inputs": {
        "tag": ["foo", "bar"],
        "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
    }
}


def _tagged_reference(rest: Rest, tags: list[bytes]) -> dict[str, np.ndarray]:
    cols = DOC_COLUMNS["inputs"]
    return reference(
        rest.root / "tagged",
        {
            "tag": np.array(tags, dtype=object),
            "signal": np.array(cols["signal"], np.int32),
            "sensor": np.array(cols["sensor"], np.float32),
        },
    )


def test_named_inputs_row_and_columnar(rest: Rest) -> None:
    want = _tagged_reference(rest, [b"foo", b"bar"])
    rows = post(rest, "/v1/models/tagged:predict", DOC_ROWS)
    assert rows.status_code == 200, rows.text
    preds = rows.json()["predictions"]
    assert [p["score"] for p in preds] == want["score"].tolist()
    assert [p["label"] for p in preds] == [b.decode() for b in want["label"]]
    # An output named *_bytes comes back base64-encoded, as TF Serving sends it.
    assert [base64.b64decode(p["tag_bytes"]["b64"]) for p in preds] == list(want["tag_bytes"])
    cols = post(rest, "/v1/models/tagged:predict", DOC_COLUMNS)
    assert cols.status_code == 200, cols.text
    out = cols.json()["outputs"]
    assert out["score"] == want["score"].tolist() and out["label"] == ["FOO", "BAR"]
    # Binary input as {"b64": ...}.
    raw = b"\x00\xfe"
    b64 = {
        "inputs": {**DOC_COLUMNS["inputs"], "tag": [{"b64": base64.b64encode(raw).decode()}, "x"]}
    }
    r = post(rest, "/v1/models/tagged:predict", b64)
    assert r.status_code == 200, r.text
    want = _tagged_reference(rest, [raw, b"x"])
    got = [base64.b64decode(t["b64"]) for t in r.json()["outputs"]["tag_bytes"]]
    assert got == list(want["tag_bytes"])


def test_rest_and_msgpack_share_batching_and_deadlines(rest: Rest) -> None:
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(16)]
    with Client(rest.proc.unix_url) as c:
        before = c.stats()["models"]["linear"]
    results: dict[int, requests.Response] = {}

    def one(i: int) -> None:
        results[i] = post(rest, "/v1/models/linear:predict", {"instances": xs[i].tolist()})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want = reference(rest.tests_root / "linear", {"x": np.concatenate(xs)})["y"]
    for i in range(len(xs)):
        got = np.array(results[i].json()["predictions"], np.float32)
        np.testing.assert_allclose(got, want[i : i + 1], rtol=1e-6, atol=1e-6)
    with Client(rest.proc.unix_url) as c:
        after = c.stats()["models"]["linear"]
    assert after["success"] - before["success"] == len(xs)  # the same dispatcher counted them
    assert after["batches"] > before["batches"]
    # A deadline (ringserve's timeout_ms extension) passes while a slow request runs.
    slow = {"inputs": {"x": [[1.0, 1.0, 1.0, 1.0]], "n": 100_000}}
    busy = threading.Thread(target=post, args=(rest, "/v1/models/slow:predict", slow))
    busy.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with Client(rest.proc.unix_url) as c:
                w = [w for w in c.stats()["workers"] if w["model"] == "slow"]
            if w and w[0]["inflight"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        late = {"inputs": {"x": [[1.0, 1.0, 1.0, 1.0]], "n": 1}, "timeout_ms": 20}
        r = post(rest, "/v1/models/slow:predict", late)
        assert r.status_code == 504 and "timeout_ms" in r.json()["error"], r.text
    finally:
        busy.join(120)


def test_errors_as_tf_serving_sends_them(rest: Rest) -> None:
    url = "/v1/models/linear:predict"
    cases = [
        (b'{"instances": [1, 2', 400, "JSON"),
        (b'{"nothing": 1}', 400, "instances"),
        (b'{"instances": [[1.0, 2.0]]}', 400, "inputs.x.shape"),
        (b'{"instances": [[1.0, 2.0], [1.0]]}', 400, "inputs.x"),
        (b'{"instances": [["a", "b"]]}', 400, "inputs.x"),
        (b'{"signature_name": "nope", "instances": [[1.0]]}', 400, "signature_name"),
        (b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}", 400, "rank"),
        # 140k values in 280 KB: over max_frame_bytes / 8, refused before parsing.
        (b'{"instances": [' + b"0," * 140_000 + b"0]}", 400, "JSON values"),
    ]
    for body, status, needle in cases:
        r = requests.post(rest.url + url, data=body, timeout=30)
        assert r.status_code == status, (body[:60], r.text)
        assert needle in r.json()["error"], (body[:60], r.text)
    r = requests.post(
        rest.url + "/v1/models/nosuch:predict", data=b'{"instances": [1]}', timeout=30
    )
    assert r.status_code == 404 and "nosuch" in r.json()["error"]
    r = requests.post(rest.url + "/v1/models/linear:classify", data=b"{}", timeout=30)
    assert r.status_code == 400 and ":predict" in r.json()["error"]
    # Messages echo only a bounded piece of what was sent.
    r = requests.post(
        rest.url + url, data=b'{"signature_name": "' + b"z" * 5000 + b'"}', timeout=30
    )
    assert r.status_code == 400 and len(r.text) < 1200


def test_keep_alive_and_pipelined_predicts(rest: Rest) -> None:
    with requests.Session() as s:  # one connection, many requests
        for i in range(20):
            r = s.post(
                rest.url + "/v1/models/half_plus_two:predict",
                data=json.dumps({"instances": [float(i)]}),
                timeout=30,
            )
            assert r.json() == {"predictions": [i * 0.5 + 2.0]}
    body = [json.dumps({"inputs": {"x": [[1.0] * 4], "n": n}}).encode() for n in (20_000, 1, 1)]
    with RawHttp(rest.port) as h:
        h.send(
            b"".join(
                b"POST /v1/models/slow:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
                % (len(b), b)
                for b in body
            )
            + b"GET /v1/models/slow HTTP/1.1\r\n\r\n"
        )
        replies = [h.response() for _ in range(4)]
    assert [r[0] for r in replies] == [200, 200, 200, 200]
    assert all("outputs" in json.loads(r[2]) for r in replies[:3])
    assert "model_version_status" in json.loads(replies[3][2])
