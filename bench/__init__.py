"""Load generation for ringserve: `ringserve bench`, `ringserve tune` and perf/.

Sits on `ringserve.client` and `ringserve.ipc` only (never the server's frontend or
runtime), so it works with the SDK-only install `pip install ringserve`; it runs on
uvloop when installed.

    from ringserve import bench
    t = bench.parse_target("unix:///tmp/rs.sock")
    tpl = bench.infer_template("demo", {"x": x})
    r = bench.closed_loop(t, tpl, concurrency=8, duration_s=3)
    print(r.p50_us, r.rps)
"""

from .frames import RequestTemplate, echo_template, infer_template, wire_tensor
from .loops import closed_loop, closed_loop_async, loop_name, open_loop, open_loop_async, run_async
from .result import LoadResult, percentiles
from .target import Target, call, call_ok, parse_target

__all__ = [
    "LoadResult",
    "RequestTemplate",
    "Target",
    "call",
    "call_ok",
    "closed_loop",
    "closed_loop_async",
    "echo_template",
    "infer_template",
    "loop_name",
    "open_loop",
    "open_loop_async",
    "parse_target",
    "percentiles",
    "run_async",
    "wire_tensor",
]
