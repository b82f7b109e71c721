"""The compiled request path (ringserve/native.py) and its Python sources.

A wheel built with a C compiler at hand runs the request path compiled by mypyc; an
editable install runs the sources. The sources are also the fallback and the oracle:
`RINGSERVE_PURE_PYTHON=1` switches an installed server back to them, and the same
frames, good and hostile, served each way get the same replies, byte for byte.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

import ringserve
from ringserve import native
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml
from rawclient import Raw

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(ringserve.__file__).resolve().parent
EDITABLE = PACKAGE == ROOT / "pkg"
TREE = ROOT if EDITABLE else PACKAGE  # where ipc/ and frontend/ are
CORPUS = Path(__file__).parent / "corpus"

PROBE = """
import importlib, json, sys
from ringserve import native
names = [native.module_name(r) for r in native.compiled_names(sys.argv[1])]
print(json.dumps({n: native.is_compiled(importlib.import_module(n)) for n in names}))
"""


def loaded(pure: bool) -> dict[str, bool]:
    """Per module of the compiled list: compiled in a fresh interpreter?"""
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(TREE)],
        env=env, cwd="/", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out: dict[str, bool] = json.loads(r.stdout)
    return out


def test_the_install_runs_what_it_was_built_as() -> None:
    mods = loaded(pure=False)
    assert len(mods) >= 20, mods  # the list comes from the installed folders
    if EDITABLE:
        # A compiled module left beside an edited source would shadow the edit.
        assert not any(mods.values()), f"compiled modules in the work tree: {mods}"
    else:
        missing = sorted(n for n, c in mods.items() if not c)
        assert not missing, (
            f"installed from a wheel, yet not compiled: {missing}. The build fell back to "
            "pure Python: `pip install -v .` shows why ('ringserve: not compiling'); it "
            "needs a C compiler and the Python headers (apt-get install gcc python3-dev)"
        )


def test_the_switch_loads_every_module_from_its_source() -> None:
    mods = loaded(pure=True)
    assert mods and not any(mods.values()), mods


# Frames every server answers the same way, whatever runs it: ordinary requests, each
# kind of refusal, and the checked-in hostile corpus (tests/corpus).
def frames() -> list[tuple[str, bytes]]:
    def f(obj: Any) -> bytes:
        body = msgpack.packb(obj, use_bin_type=True)
        return len(body).to_bytes(4, "big") + body

    x1 = {"dtype": "float32", "shape": [1, 16], "data": bytes(range(64))}
    x3 = {"dtype": "float32", "shape": [3, 16], "data": bytes(range(192))}
    strings = {"dtype": "string", "shape": [2], "data": [b"a", b"bc"]}
    ints = {"dtype": "int32", "shape": [2], "data": bytes(range(8))}

    def infer(rid: int, model: str = "linear", **fields: Any) -> bytes:
        return f({"id": rid, "op": "infer", "model": model, "inputs": {"x": x1}, **fields})

    out = [
        ("infer", infer(1)),
        ("infer rows", infer(2, inputs={"x": x3})),
        ("one output", infer(3, outputs=["y"])),
        ("strings", infer(4, "strings", inputs={"s": strings})),
        ("other signature", infer(5, "ints", signature="double", inputs={"n": ints})),
        ("dtype", infer(6, inputs={"x": {**x1, "dtype": "int32"}})),
        ("shape", infer(7, inputs={"x": {**x1, "shape": [1, 15]}})),
        ("model", infer(8, "nope")),
        ("output", infer(9, outputs=["nope"])),
        ("region", infer(10, output_shm={"y": {"region": [1], "offset": 0, "size": 4}})),
        ("op", f({"id": 11, "op": "nope"})),
        ("id", f({"id": "one", "op": "health"})),
        ("not msgpack", b"\x00\x00\x00\x03\xc1\xc1\xc1"),
        ("metadata", f({"id": 12, "op": "metadata", "model": "linear"})),
    ]
    index = json.loads((CORPUS / "index.json").read_text())
    out += [(name, gzip.decompress((CORPUS / f"{name}.gz").read_bytes())) for name in index]
    return out


def replies(srv: ServerProcess) -> dict[str, list[bytes]]:
    """Each frame on a connection of its own: the reply frames, packed again."""
    got: dict[str, list[bytes]] = {}
    for name, data in frames():
        with Raw(srv.unix_url) as raw:
            raw.send_bytes(data)
            first = raw.recv()
            got[name] = [msgpack.packb(first, use_bin_type=True)]
            if not raw.closed_by_peer(within=0.2):
                raw.send({"id": 99, "op": "health"})
                got[name].append(msgpack.packb(raw.recv()["ok"], use_bin_type=True))
    return got


def test_compiled_and_sources_answer_alike(model_root: Path, tmp_path: Path) -> None:
    toml = models_toml(model_root, ["linear", "ints", "strings"])
    conf = "max_frame_bytes = 8388608"
    answers = []
    for pure in (False, True):
        env = {native.PURE_ENV: "1"} if pure else {}
        log = tmp_path / f"server-{pure}.log"
        with log.open("wb") as sink:
            srv = ServerProcess(toml, conf, env=env, stderr=sink)
            srv.start()
            try:
                answers.append(replies(srv))
            finally:
                code = srv.stop()
        err = log.read_text()
        assert code == 0, err[-2000:]
        want = "in pure Python" if pure or EDITABLE else "compiled (mypyc)"
        assert f"request path {want}" in err, err[-2000:]
    compiled, sources = answers
    differ = {k: (compiled[k], sources[k]) for k in compiled if compiled[k] != sources[k]}
    assert not differ, differ
    # Real answers were compared, not only refusals.
    ok = [k for k, v in compiled.items() if v[0].startswith(b"\x85\xa2id")]
    assert {"infer", "infer rows", "one output", "strings", "other signature"} <= set(ok), ok


def test_stand_in_tests_pass_on_the_sources() -> None:
    """Tests marked `sources` drive modules with stand-ins (fake links and clocks) that
    compiled modules refuse: mypyc checks argument types. Where the request path is
    compiled, conftest.py leaves them out of the run and they run here, on the sources."""
    from ringserve.frontend import dispatch

    if not native.is_compiled(dispatch):
        pytest.skip("the request path runs from its sources here: those tests ran in this run")
    env = {**os.environ, native.PURE_ENV: "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "sources and not slow", "tests"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout, r.stdout[-2000:]
