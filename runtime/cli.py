"""The `ringserve` command: serve, check-config, migrate, demo, top, bench, tune."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from .config import Config, ConfigError, demo_config, load, parse
from .tfserving import flags as tfs_flags


def _config(path: str | None) -> Config:
    path = path or os.environ.get("RINGSERVE_CONFIG")
    if path:
        return load(path)
    base = demo_model_path()
    return demo_config(base, tcp="127.0.0.1:8700", unix=default_demo_socket())


def _flags_loader(path: str | None, args: argparse.Namespace) -> Callable[[], Config]:
    """TF Serving's flags, over the TOML file if there is one: a function, so a reload
    (SIGHUP) reads the files again with the same flags."""

    def load_with_flags() -> Config:
        raw: dict = {}
        base_dir = None
        if path:
            try:
                with open(path, "rb") as f:
                    raw = tomllib.load(f)
            except FileNotFoundError:
                raise ConfigError(f"{path}: file not found") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
            base_dir = Path(path).resolve().parent
        lines, instances = tfs_flags.apply(raw, args, from_file=bool(path))
        cfg = parse(raw, path or "<command line>", base_dir, model_instances=instances)
        return Config(cfg.server, cfg.models, cfg.path, (*lines, *cfg.notes), cfg.groups)

    return load_with_flags


def default_demo_socket() -> str:
    run = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(run, "ringserve-demo.sock")


def demo_model_path() -> Path:
    """Build the demo model once (in a child: this process must not load TensorFlow)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ringserve"
    base = cache / "demo-mlp"
    if not (base / "1" / "saved_model.pb").exists():
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "ringserve.runtime.worker.demo_model", str(base)],
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ringserve", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the server (default: the built-in demo model)")
    s.add_argument("--config", help="TOML file (or $RINGSERVE_CONFIG)")
    tfs_flags.add_arguments(s)
    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("file")
    mg = sub.add_parser(
        "migrate", help="print the ringserve TOML for a TF Serving models.config, and exit"
    )
    mg.add_argument("model_config_file", help="TF Serving model_config_list text proto")
    mg.add_argument("--batching_parameters_file", help="TF Serving BatchingParameters text proto")
    d = sub.add_parser("demo", help="build the demo model, serve it, query it, stop")
    d.add_argument("--requests", type=int, default=500)
    d.add_argument("--concurrency", type=int, default=8)
    t = sub.add_parser("top", help="live figures of a running server, refreshed every second")
    t.add_argument("address", help="unix:///path/to.sock, tcp://host:port, host:port or a path")
    t.add_argument("--interval", type=float, default=1.0, help="seconds per view (default 1)")
    t.add_argument(
        "--iterations", type=int, default=None, help="views to show, then exit (default: until ^C)"
    )
    t.add_argument("--once", action="store_true", help="one view (over one interval), then exit")
    t.add_argument("--token-file", help="file holding the TCP auth token, if the server wants one")
    from ringserve.bench import cli as bench_cli

    bench_cli.add_arguments(sub.add_parser("bench", help="load a running server, report it"))
    from . import tune

    tune.add_arguments(sub.add_parser("tune", help="find the best [[models]] settings"))
    args = p.parse_args(argv)

    if args.cmd == "check-config":
        try:
            cfg = load(args.file)
        except ConfigError as exc:
            print(f"ringserve: {exc}", file=sys.stderr)
            return 2
        print(f"{args.file}: ok ({len(cfg.models)} models)")
        return 0
    if args.cmd == "migrate":
        from .tfserving.migrate import render

        try:
            b = args.batching_parameters_file
            sys.stdout.write(render(Path(args.model_config_file), Path(b) if b else None))
        except ConfigError as exc:
            print(f"ringserve: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "serve":
        path = args.config or os.environ.get("RINGSERVE_CONFIG")
        loader = _flags_loader(path, args) if tfs_flags.used(args) else None
        try:
            cfg = loader() if loader is not None else _config(args.config)
        except ConfigError as exc:
            print(f"ringserve: {exc}", file=sys.stderr)
            return 2
        from . import systemd
        from .supervisor import run

        return run(cfg, systemd.listen_sockets(), path, loader)
    if args.cmd == "top":
        from .top import main as top_main

        return top_main(args)
    if args.cmd == "demo":
        from .demo import run_demo

        return run_demo(args.requests, args.concurrency)
    if args.cmd == "bench":
        return bench_cli.main(args)
    if args.cmd == "tune":
        return tune.main(args)
    return 2
