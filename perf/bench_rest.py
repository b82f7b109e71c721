"""REST (TF Serving's JSON predict) against msgpack over TCP, and against FastAPI.

On the demo MLP (784-512-512-10), batch 1, closed loop at concurrency 1 and 32
(one connection per request in flight, keep-alive):

- ringserve's REST API (`[server] http`), JSON `{"instances": [[784 floats]]}`;
- ringserve's msgpack protocol over TCP, the same input as raw float32 bytes;
- FastAPI + uvicorn with TensorFlow in process doing the same JSON predict
  (perf/fastapi_mlp.py, what users write when they leave TF Serving);
- the in-process TensorFlow call on the same input (the floor).

Targets: REST p50 within 1.5x of msgpack p50 at c=1; REST at least 3x FastAPI's
throughput at c=32. The load generator states its own ceiling: the same client
against a null HTTP server (a canned reply, no parsing beyond framing) in its own
process; a measured rate above 70% of that ceiling is flagged as client-bound.

    flock /tmp/ringserve-bench.lock python perf/bench_rest.py --write-results
    python perf/bench_rest.py --quick       # smoke test, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchcli as C
import benchlib as B
import inproc
import msgpack
import numpy as np

from ringserve.runtime.launch import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
BATCHING = """
  [models.batching]
  max_batch_size = 32
  batch_timeout_us = 1000
"""
CLIENT_BOUND = 0.7  # of the load generator's ceiling

NULL_SERVER = r"""
import asyncio, sys
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            n = 0
            for line in self.buf[:i].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"): n = int(line.split(b":")[1])
            if len(self.buf) < i + 4 + n: return
            self.buf = self.buf[i + 4 + n:]
            self.t.write(REPLY)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()
try:
    import uvloop; uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


# ---- load generator --------------------------------------------------------------------


async def _http_conn(port: int, req: bytes, until: float, lat: list[float], err: list[int]):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    n = int(line[15:])
            await r.readexactly(n)
            lat.append(time.perf_counter() - t0)
            if head[9:12] != b"200":
                err.append(1)
    finally:
        w.close()


async def _msgpack_conn(port: int, req: bytes, until: float, lat: list[float], err: list[int]):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            w.write(req)
            (n,) = struct.unpack(">I", await r.readexactly(4))
            body = await r.readexactly(n)
            lat.append(time.perf_counter() - t0)
            if b"\xa2ok\xc3" not in body:
                err.append(1)
    finally:
        w.close()


async def _run(kind: str, port: int, req: bytes, conns: int, seconds: float) -> dict[str, Any]:
    conn = _http_conn if kind == "http" else _msgpack_conn
    warm: list[float] = []
    await asyncio.gather(
        *(conn(port, req, time.perf_counter() + min(0.5, seconds), warm, []) for _ in range(conns))
    )
    lat: list[float] = []
    err: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(conn(port, req, t0 + seconds, lat, err) for _ in range(conns)))
    wall = time.perf_counter() - t0
    p = B.percentiles(np.array(lat) * 1e6)
    return {
        "p50_us": p["p50"],
        "p90_us": p["p90"],
        "p99_us": p["p99"],
        "req_s": len(lat) / wall,
        "errors": len(err),
        "n": len(lat),
    }


def measure(kind: str, port: int, req: bytes, conns: int, seconds: float) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(_run(kind, port, req, conns, seconds))  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(_run(kind, port, req, conns, seconds))


# ---- requests --------------------------------------------------------------------------


def http_request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def msgpack_request(x: np.ndarray[Any, Any]) -> bytes:
    body = msgpack.packb(
        {
            "id": 1,
            "op": "infer",
            "model": "demo",
            "inputs": {"x": {"dtype": "float32", "shape": list(x.shape), "data": x.tobytes()}},
        },
        use_bin_type=True,
    )
    return struct.pack(">I", len(body)) + body


# ---- processes -------------------------------------------------------------------------


def _wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no 200 from :{port}{path} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument(
        "--no-batching-rows",
        action="store_true",
        help="skip the second ringserve with [models.batching] (max_batch_size 32)",
    )
    C.add_output_args(p)
    args = p.parse_args(argv)
    C.apply_quick(args, seconds=0.5)
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="rsbench-rest-")
    root = Path(tmp.name)
    vdir = inproc.build_models(root)["demo"]
    npy = inproc.make_inputs(root, [1])[("demo", 1)]
    x = np.load(npy)
    json_body = json.dumps({"instances": x.tolist()}).encode()
    rest_req = http_request("/v1/models/demo:predict", json_body)
    mp_req = msgpack_request(x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    http_port, fa_port, null_port, bhttp_port = free_port(), free_port(), free_port(), free_port()
    log = open(root / "servers.log", "wb")
    model = f'[[models]]\nname = "demo"\nbase_path = "{vdir.parent}"\n'
    srv = ServerProcess(model, f'http = "127.0.0.1:{http_port}"', env=env, stderr=log)
    batched = None
    if not args.no_batching_rows:
        batched = ServerProcess(
            model + BATCHING, f'http = "127.0.0.1:{bhttp_port}"', env=env, stderr=log
        )
    fastapi = null = None
    floor_child = None
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    floor: list[dict[str, Any]] = []
    try:
        srv.start()
        if batched is not None:
            batched.start()
        fastapi = subprocess.Popen(
            [sys.executable, str(HERE / "fastapi_mlp.py"), str(fa_port)],
            env={**env, "MODEL_DIR": str(vdir)},
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
        null = subprocess.Popen(
            [sys.executable, "-c", NULL_SERVER, str(null_port)],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert null.stdout is not None
        null.stdout.readline()
        _wait_http(fa_port, "/healthz", fastapi, 180)
        floor_child = inproc.FloorChild({"demo": vdir})
        targets = [
            ("msgpack tcp", "msgpack", srv.port, mp_req),
            ("REST JSON", "http", http_port, rest_req),
            ("FastAPI JSON", "http", fa_port, http_request("/v1/models/demo:predict", json_body)),
            ("null HTTP (client ceiling)", "http", null_port, rest_req),
        ]
        if batched is not None:
            targets += [
                ("msgpack tcp, batching", "msgpack", batched.port, mp_req),
                ("REST JSON, batching", "http", bhttp_port, rest_req),
            ]
        for _ in range(args.repeat):  # interleaved: every target sees the same noise
            floor.append(floor_child.time("demo", npy, n=300 if args.quick else 2000))
            for name, kind, port, req in targets:
                for c in levels:
                    rows.setdefault((name, c), []).append(measure(kind, port, req, c, args.seconds))
    finally:
        if floor_child is not None:
            floor_child.close()
        for proc in (fastapi, null):
            if proc is not None:
                _stop(proc)
        srv.stop()
        if batched is not None:
            batched.stop()
        log.close()
    med = {k: B.median_dicts(v) for k, v in rows.items()}
    floor_p50 = B.median(f["p50_us"] for f in floor)
    errors = sum(r["errors"] for v in rows.values() for r in v)
    body = report(args, med, floor_p50, levels, errors)
    print(body)
    tmp.cleanup()
    return C.publish(
        args, "bench_rest", "REST JSON vs msgpack vs FastAPI (perf/bench_rest.py)", body, errors > 0
    )


def report(
    args: argparse.Namespace,
    med: dict[tuple[str, int], dict[str, Any]],
    floor_p50: float,
    levels: list[int],
    errors: int,
) -> str:
    info = B.machine_info()
    lines = [
        f"Run of {B.now_utc()}: `{B.command_line()}`; medians of {args.repeat} interleaved runs "
        f"of {args.seconds:g} s each.",
        "",
        *B.machine_lines(info),
        "",
        "Demo MLP, batch 1, closed loop, one keep-alive connection per request in flight. "
        "ringserve: one worker (intra/inter 1), no batching (the rows marked batching: "
        "a second server with [models.batching] max_batch_size 32, batch_timeout_us 1000); "
        "FastAPI: uvicorn, one process, TensorFlow's default threads.",
        f"In-process TensorFlow call (the floor): p50 {B.fmt(floor_p50)} us.",
        "",
    ]
    table = []
    ceiling = {c: med[("null HTTP (client ceiling)", c)]["req_s"] for c in levels}
    flags = []
    for (name, c), r in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        share = r["req_s"] / ceiling[c] if ceiling[c] else float("nan")
        if name != "null HTTP (client ceiling)" and share > CLIENT_BOUND:
            flags.append(f"{name} c={c} at {share:.0%} of the client's ceiling: client-bound")
        table.append(
            [
                name,
                c,
                B.fmt(r["p50_us"]),
                B.fmt(r["p90_us"]),
                B.fmt(r["p99_us"]),
                B.fmt(r["req_s"], 0),
                f"{share:.0%}",
            ]
        )
    lines.append(
        B.md_table(["target", "c", "p50 us", "p90 us", "p99 us", "req/s", "of ceiling"], table)
    )
    lines.append("")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "nan"

    if 1 in levels:
        rest, mp = med[("REST JSON", 1)], med[("msgpack tcp", 1)]
        r1 = rest["p50_us"] / mp["p50_us"]
        lines.append(
            f"- c=1: REST p50 / msgpack p50 = {ratio(rest['p50_us'], mp['p50_us'])} "
            f"(target <= 1.5: {'met' if r1 <= 1.5 else 'NOT met'}); REST p50 / in-process "
            f"= {ratio(rest['p50_us'], floor_p50)}, msgpack p50 / in-process = "
            f"{ratio(mp['p50_us'], floor_p50)}."
        )
    if 32 in levels:
        rest, fa = med[("REST JSON", 32)], med[("FastAPI JSON", 32)]
        r32 = rest["req_s"] / fa["req_s"]
        lines.append(
            f"- c=32: REST req/s / FastAPI req/s = {ratio(rest['req_s'], fa['req_s'])} "
            f"(target >= 3: {'met' if r32 >= 3 else 'NOT met'}); REST / msgpack = "
            f"{ratio(rest['req_s'], med[('msgpack tcp', 32)]['req_s'])}."
        )
        b = med.get(("REST JSON, batching", 32))
        if b is not None:
            lines.append(
                f"- c=32 with batching: REST req/s / FastAPI req/s = "
                f"{ratio(b['req_s'], fa['req_s'])}; REST / msgpack (both batching) = "
                f"{ratio(b['req_s'], med[('msgpack tcp, batching', 32)]['req_s'])}."
            )
    lines += [f"- {f}" for f in flags] or ["- No target ran above 70% of the client's ceiling."]
    if errors:
        lines.append(f"- {errors} requests failed: the figures are not valid.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
