"""TF Serving's command-line flags on `ringserve serve`, with TF Serving's meaning.

    ringserve serve --model_name=NAME --model_base_path=PATH --rest_api_port=8501
    ringserve serve --model_config_file=models.config --enable_batching \\
        --batching_parameters_file=batching.txt --port=8500

Without --config the server starts from TF Serving's defaults (listen on every
interface, msgpack on --port 8500 where TF Serving has gRPC, REST off unless
--rest_api_port is given, no Unix socket); with --config the flags override that
file's keys (a port flag keeps the file's host). Flags become keys of the same TOML
structure and go through the same validation.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

TF_SERVING_PORT = 8500  # TF Serving's --port default (its gRPC port)

# TF Serving flags ringserve accepts and does nothing with; the log says so.
IGNORED = {
    "rest_api_num_threads": "the REST API runs on the frontend's event loop",
    "model_config_file_poll_wait_seconds": "send SIGHUP to re-read the model config file",
    "monitoring_config_file": "metrics are always at /monitoring/prometheus/metrics and /metrics",
    "grpc_channel_arguments": "gRPC is not served",
    "enable_model_warmup": "ringserve always warms models (and reads assets.extra warmup files)",
}


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, received {s!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TF Serving flags (tensorflow_model_server's meaning)")
    g.add_argument("--model_name", help="serve one model under this name (with --model_base_path)")
    g.add_argument("--model_base_path", help="folder of numbered versions of that model")
    g.add_argument("--model_config_file", help="TF Serving model_config_list text proto")
    g.add_argument("--port", type=int, help="ringserve's msgpack TCP port (TF Serving's gRPC port)")
    g.add_argument("--rest_api_port", type=int, help="REST API port; 0 disables")
    g.add_argument(
        "--enable_batching",
        type=_bool,
        nargs="?",
        const=True,
        default=None,
        help="batch requests, with --batching_parameters_file or TF Serving's defaults",
    )
    g.add_argument("--batching_parameters_file", help="TF Serving BatchingParameters text proto")
    g.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        help="deadline of requests that carry none (server.default_timeout_ms)",
    )
    g.add_argument(
        "--tensorflow_intra_op_parallelism", type=int, help="intra_op_threads per worker"
    )
    g.add_argument(
        "--tensorflow_inter_op_parallelism", type=int, help="inter_op_threads per worker"
    )
    g.add_argument(
        "--file_system_poll_wait_seconds", type=float, help="server.version_poll_seconds"
    )
    for name in IGNORED:
        g.add_argument(f"--{name}", help=argparse.SUPPRESS)


def used(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k, None) is not None
        for k in (
            "model_name",
            "model_base_path",
            "model_config_file",
            "port",
            "rest_api_port",
            "enable_batching",
            "batching_parameters_file",
            "rest_api_timeout_in_ms",
            "tensorflow_intra_op_parallelism",
            "tensorflow_inter_op_parallelism",
            "file_system_poll_wait_seconds",
            *IGNORED,
        )
    )


def _with_port(current: str, port: int, default_host: str) -> str:
    if port == 0:
        return ""
    host = current.rpartition(":")[0] if current else default_host
    return f"{host}:{port}"


def apply(
    raw: dict[str, Any], args: argparse.Namespace, from_file: bool
) -> tuple[list[str], dict[str, int]]:
    """Fold the flags into a raw TOML config (in place). Returns lines for the log and
    the [models.instances] keys every model gets (models.config's ones included)."""
    log: list[str] = []
    server = raw.setdefault("server", {})
    if not from_file:
        server.setdefault("tcp", f"0.0.0.0:{TF_SERVING_PORT}")
        server.setdefault("unix", "")
    if args.port is not None:
        server["tcp"] = _with_port(server.get("tcp", ""), args.port, "0.0.0.0")
    if args.rest_api_port is not None:
        server["http"] = _with_port(server.get("http", ""), args.rest_api_port, "0.0.0.0")
    if args.model_config_file:
        server["model_config_file"] = os.path.abspath(args.model_config_file)
    if args.enable_batching:
        server["enable_batching"] = True
        if args.batching_parameters_file:
            server["batching_parameters_file"] = os.path.abspath(args.batching_parameters_file)
    elif args.batching_parameters_file:
        log.append(
            "--batching_parameters_file without --enable_batching: ignored, as TF Serving "
            "ignores it"
        )
    if args.rest_api_timeout_in_ms is not None:
        server["default_timeout_ms"] = args.rest_api_timeout_in_ms
    if args.file_system_poll_wait_seconds is not None:
        server["version_poll_seconds"] = max(0.0, args.file_system_poll_wait_seconds)
    if (args.model_name is None) != (args.model_base_path is None):
        raise SystemExit(
            "ringserve serve: --model_name and --model_base_path go together "
            f"(received {'--model_name' if args.model_name else '--model_base_path'} alone)"
        )
    if args.model_name is not None:
        models = raw.setdefault("models", [])
        models.append({"name": args.model_name, "base_path": os.path.abspath(args.model_base_path)})
    threads = {
        "intra_op_threads": args.tensorflow_intra_op_parallelism,
        "inter_op_threads": args.tensorflow_inter_op_parallelism,
    }
    for name, why in IGNORED.items():
        if getattr(args, name, None) is not None:
            log.append(f"--{name}: accepted and ignored: {why}")
    return log, {k: n for k, n in threads.items() if n is not None}


def log(lines: list[str]) -> None:
    for line in lines:
        print(f"ringserve: {line}", file=sys.stderr)
