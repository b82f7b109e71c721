"""The `ringserve tune` run: a private server per candidate, bench on each, the ranking."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ringserve.bench import runner
from ringserve.bench.progress import Progress
from ringserve.bench.target import call_ok, parse_target

from .launch import ServerProcess
from .tune import GAIN_MIN, HOPELESS, P50_PROBE, START_GUESS_S, Objective, Result
from .tunegrid import grid

WORKERS_READY_TIMEOUT_S = 300.0
DEFAULT_SWEEP = [1, 2, 4, 8, 16, 32]


def model_location(path: str) -> tuple[Path, int | None]:
    """(base path, version) from a base path or one version folder."""
    p = Path(path).resolve()
    if (p / "saved_model.pb").exists():
        if not p.name.isdigit():
            raise ValueError(f"--model-path {p}: a version folder's name must be a number")
        return p.parent, int(p.name)
    if not p.is_dir() or not any(
        (d / "saved_model.pb").exists() for d in p.iterdir() if d.name.isdigit()
    ):
        raise ValueError(
            f"--model-path {p}: expected a folder of numbered versions (1/saved_model.pb ...) "
            "or one version folder"
        )
    return p, None


def _ints(s: str | None) -> list[int] | None:
    return [int(x) for x in s.split(",") if x.strip()] if s else None


class Tuner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base, self.version = model_location(args.model_path)
        name = args.model_name or re.sub(r"[^A-Za-z0-9_.-]", "_", self.base.name)[:64]
        self.name = name or "model"
        self.cores = sorted(os.sched_getaffinity(0))[: args.cores or None]
        if args.objective == "p50":
            conc = args.concurrency or [1]
            if len(conc) != 1:
                raise ValueError("--objective p50 takes one --concurrency N")
        else:
            conc = args.concurrency or DEFAULT_SWEEP
        self.objective = Objective(args.objective, args.p99_ms, sorted(conc))
        self.cands = grid(
            len(self.cores),
            instances=_ints(args.instances),
            max_batch_sizes=_ints(args.max_batch_sizes) or [],
            batching=not args.no_batching,
            pinning=not args.no_pinning,
        )
        self.results: list[Result] = []
        self.best: Result | None = None
        self.interrupted = False
        self.deadline = time.monotonic() + args.budget_minutes * 60
        self.progress = Progress(
            args.budget_minutes * 60, enabled=False if args.no_progress else None
        )
        self.request = runner.Request(
            model=self.name,
            batch_size=args.batch_size,
            signature=args.signature,
            outputs=args.outputs,
            input_file=args.input_file,
            seed=args.seed,
        )

    # ---- the run ------------------------------------------------------------------
    def run(self) -> int:
        if self.args.plot:
            from ringserve.bench.plot import check_available

            check_available()
        self.say(
            f"ringserve tune: {self.name} from {self.base}; objective {self.objective.describe()}; "
            f"{len(self.cands)} candidates on {len(self.cores)} cores; budget "
            f"{self.args.budget_minutes:g} min"
        )

        # Ctrl-C is remembered as well as raised: a KeyboardInterrupt that lands inside
        # the load generator's event loop becomes a cancellation there, which a run
        # ending at that moment can absorb; the next candidate must not start anyway.
        def on_sigint(signum: int, frame: Any) -> None:
            self.interrupted = True
            signal.default_int_handler(signum, frame)

        previous = signal.signal(signal.SIGINT, on_sigint)
        with tempfile.TemporaryDirectory(prefix="ringserve-tune-") as tmp:
            try:
                for k, cand in enumerate(self.cands):
                    if self.interrupted:
                        raise KeyboardInterrupt
                    if not self.fits(k):
                        self.say(f"budget reached: {len(self.cands) - k} candidates not tried")
                        break
                    res = Result(cand)
                    self.results.append(res)
                    self.try_candidate(k, res, Path(tmp) / f"c{k}")
                    if self.objective.better(res.score, self.best.score if self.best else math.nan):
                        self.best = res
            except KeyboardInterrupt:
                self.interrupted = True
                self.progress.done()
                self.say("interrupted: stopping with the best found so far")
            finally:
                signal.signal(signal.SIGINT, previous)
        self.progress.done()
        return self.finish()

    def fits(self, k: int) -> bool:
        if k == 0:
            return True
        done = [r.seconds for r in self.results if r.seconds > 0]
        est = sum(done) / len(done) if done else START_GUESS_S
        return time.monotonic() + 0.5 * est < self.deadline

    def say(self, line: str) -> None:
        self.progress.note(line)

    def try_candidate(self, k: int, res: Result, workdir: Path) -> None:
        t0 = time.monotonic()
        workdir.mkdir(parents=True)
        cand = res.cand
        self.say(f"[{k + 1}/{len(self.cands)}] {cand.name}")
        self.progress.point(f"[{k + 1}/{len(self.cands)}] starting a server")
        log = open(workdir / "server.log", "wb")
        srv = ServerProcess(
            cand.model_toml(
                self.name, str(self.base), self.cores, self.version, self.args.batch_timeout_us
            ),
            "\n".join(['tcp = ""', f'name = "tune{os.getpid()}c{k}"', *self.args.server_toml]),
            workdir=str(workdir),
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
            stderr=log,
            ready_timeout=WORKERS_READY_TIMEOUT_S,
        )
        try:
            try:
                srv.start()
                self.wait_workers(srv, cand.instances)
            except (RuntimeError, TimeoutError, OSError) as exc:
                log.flush()
                res.status = f"server failed: {exc}"
                tail = (workdir / "server.log").read_text(errors="replace").splitlines()[-5:]
                self.say("  " + res.status + "".join(f"\n    {ln}" for ln in tail))
                return
            res.start_s = time.monotonic() - t0
            self.measure(k, res, srv)
        finally:
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops, whatever
            try:
                srv.stop()
            finally:
                signal.signal(signal.SIGINT, old)
                log.close()
            res.seconds = time.monotonic() - t0
            if res.best is not None:
                b = res.best
                self.say(
                    f"  score {self._score(res)} at c={b['concurrency']}: {b['rps']:.0f} req/s, "
                    f"p50 {b['p50_us'] / 1000:.2f} ms, p99 {b['p99_us'] / 1000:.2f} ms "
                    f"({res.status})"
                )
            elif res.status == "not run":
                res.status = "no point met the objective"
                self.say("  " + res.status)

    def wait_workers(self, srv: ServerProcess, n: int) -> None:
        target = parse_target(srv.unix_url)
        deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
        while True:
            ws = call_ok(target, "stats").get("workers", [])
            if sum(1 for w in ws if w.get("model") == self.name and w.get("state") == "ready") >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workers not ready within {WORKERS_READY_TIMEOUT_S:.0f}s")
            if srv.proc is not None and srv.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {srv.proc.returncode}")
            time.sleep(0.1)

    def measure(self, k: int, res: Result, srv: ServerProcess) -> None:
        a = self.args
        obj = self.objective
        target = parse_target(srv.unix_url)
        best_at = {r["concurrency"]: r["rps"] for r in (self.best.points if self.best else [])}
        best_score = self.best.score if self.best else math.nan
        label = f"[{k + 1}/{len(self.cands)}]"

        def stop_when(row: dict[str, Any]) -> bool:
            prev = res.points[-1] if res.points else None
            res.points.append(row)
            if obj.kind == "p50" or row["concurrency"] >= obj.concurrency[-1]:
                return False
            if time.monotonic() > self.deadline:
                res.status = "cut by budget"
                return True
            if not obj.ok(row):
                res.status = (
                    "done (p99 budget or errors reached)"
                    if res.points[:-1]
                    else ("stopped early: the first point already misses the objective")
                )
                return True
            ref = best_at.get(row["concurrency"])
            if ref and row["rps"] < HOPELESS * ref:
                res.status = f"stopped early: under {HOPELESS:.0%} of the best at this concurrency"
                return True
            if prev is not None and obj.ok(prev) and row["rps"] < GAIN_MIN * prev["rps"]:
                res.status = "done (throughput stopped growing)"
                return True
            return False

        with runner.prepared(target, self.request) as (tpl, setup):
            if obj.kind == "p50":
                c = obj.concurrency[0]
                probe = runner.Load([c], duration_s=max(0.05, a.duration / 4), warmup_s=a.warmup)
                self.progress.point(f"{label} probe c={c}")
                row = runner.measure(
                    target,
                    tpl,
                    probe,
                    "closed",
                    c,
                    model=self.name,
                    setup=setup,
                    tick=self.progress.tick,
                )
                if not math.isnan(best_score) and row["p50_us"] > P50_PROBE * best_score:
                    res.points.append(row)
                    res.status = f"stopped early: probe p50 over {P50_PROBE}x the best"
                    res.score, res.best = obj.score(res.points)
                    return
                load = runner.Load([c], duration_s=a.duration, warmup_s=0.1)
            else:
                load = runner.Load(obj.concurrency, duration_s=a.duration, warmup_s=a.warmup)
            runner.run_points(
                target,
                tpl,
                load,
                model=self.name,
                setup=setup,
                progress=self.progress,
                stop_when=stop_when,
                label=label,
            )
        if res.status == "not run":
            res.status = "done"
        res.score, res.best = obj.score(res.points)

    # ---- the end ------------------------------------------------------------------
    def _score(self, r: Result) -> str:
        if math.isnan(r.score):
            return "-"
        if self.objective.kind == "p50":
            return f"p50 {r.score / 1000:.3f} ms"
        return f"{r.score:.0f} req/s"

    def ranked(self) -> list[Result]:
        ok = [r for r in self.results if not math.isnan(r.score)]
        rest = [r for r in self.results if math.isnan(r.score)]
        ok.sort(key=lambda r: r.score, reverse=self.objective.kind != "p50")
        return ok + rest

    def finish(self) -> int:
        from .tunereport import table, write_plot, write_toml

        ranked = self.ranked()
        print(table(ranked, self._score))
        if self.best is None:
            print("no candidate met the objective", file=sys.stderr)
            return 130 if self.interrupted else 1
        print(
            f"\nbest: {self.best.cand.name} ({self._score(self.best)})"
            + (" (interrupted: best so far)" if self.interrupted else "")
        )
        toml = self.best.cand.model_toml(
            self.name, str(self.base), self.cores, self.version, self.args.batch_timeout_us
        )
        if self.args.output:
            write_toml(self.args.output, toml, self)
            print(f"wrote {self.args.output}")
        else:
            print("\n" + toml)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.doc(ranked), indent=2, default=str))
        if self.args.plot:
            write_plot(self.args.plot, ranked, self)
        return 0

    def doc(self, ranked: list[Result]) -> dict[str, Any]:
        return {
            "tool": "ringserve tune",
            "model": self.name,
            "base_path": str(self.base),
            "objective": self.objective.describe(),
            "cores": self.cores,
            "interrupted": self.interrupted,
            "candidates": [{**r.row(), "points": r.points} for r in ranked],
        }
