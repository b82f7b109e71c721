"""The soak's verdict and its Markdown (perf/soak.py): the acceptance checks over the tally
and the samples, and the windows of RSS, fds and /dev/shm over the run."""

from __future__ import annotations

import argparse

import benchcli as C
import benchlib as B
import numpy as np
from soak_traffic import Tally


def report(
    args: argparse.Namespace,
    seconds: float,
    start: dict,
    end: dict,
    samples: list[dict],
    t: Tally,
    stuck: list[str],
    settled: bool,
    code: int,
) -> int:
    c = t.c
    warm = min(300.0, seconds / 5)

    def window(key: str) -> tuple[float, float]:
        """Median of `key` in the minute after warm-up, and in the last minute."""
        base = [s[key] for s in samples if warm <= s["t"] < warm + 60] or [samples[0][key]]
        last = [s[key] for s in samples if s["t"] >= seconds - 60] or [samples[-1][key]]
        return float(np.median(base)), float(np.median(last))

    rb, re_ = window("rss_kb")
    growth = re_ / rb - 1
    ab, ae = window("anon_kb")
    judged = seconds >= 300
    rows = [
        ("requests without a reply", c["no_reply"], "0", c["no_reply"] == 0 and not stuck),
        ("wrong answers", c["wrong"], "0", c["wrong"] == 0),
        (
            "valid requests failed other than UNAVAILABLE",
            c["valid_other_error"],
            "0",
            c["valid_other_error"] == 0,
        ),
        (
            "RSS growth after warm-up",
            f"{growth * 100:+.1f}% ({rb / 1024:.1f} -> {re_ / 1024:.1f} MiB)",
            "< 5%" if judged else "< 5% (not judged: run < 5 min)",
            growth < 0.05 or not judged,
        ),
        (
            "of which anonymous memory (RssAnon), after warm-up",
            f"{(ae / ab - 1) * 100:+.1f}% ({ab / 1024:.1f} -> {ae / 1024:.1f} MiB)",
            "(recorded)",
            True,
        ),
        (
            "open fds, start -> end",
            f"{start['fds']} -> {end['fds']}",
            "no more",
            end["fds"] <= start["fds"],
        ),
        (
            "/dev/shm ringserve entries, start -> end",
            f"{start['shm']} -> {end['shm']}",
            "no more",
            end["shm"] <= start["shm"],
        ),
        ("threads, start -> end", f"{start['threads']} -> {end['threads']}", "(recorded)", True),
        ("server exit code after SIGTERM", code, "0", code == 0),
    ]
    ok = all(r[3] for r in rows)
    peak = max(s["rss_kb"] for s in samples) / 1024
    traffic = (
        f"valid requests {c['valid_sent']} (ok {c['valid_ok']}, UNAVAILABLE "
        f"{c['valid_unavailable']}), invalid {c['invalid_sent']} (answered with an error "
        f"{c['invalid_answered']}), hostile: truncated regions {c['trunc_sent']} "
        f"(answered with an error {c['trunc_answered']}), oversize headers "
        f"{c['hostile_oversize']}, garbage bodies {c['hostile_garbage']}, slow frames "
        f"{c['hostile_slow']} (answered {c['slow_answered']}), non-reading clients "
        f"{c['hostile_noread']}, connect-and-close "
        f"{c['hostile_close']}; workers killed {c['chaos_kills']}, reloads {c['chaos_reloads']}"
    )
    body = "\n".join(
        [
            *B.machine_lines(B.machine_info()),
            f"- command: `{B.command_line()}`",
            f"- run: {B.now_utc()}, {seconds / 60:.1f} minutes, {len(samples)} samples every "
            f"{args.sample_seconds:g} s; peak RSS {peak:.0f} MiB",
            f"- traffic: {traffic}",
            "",
            B.md_table(
                ["criterion", "measured", "limit", "met"],
                [(a, b, lim, "yes" if m else "**no**") for a, b, lim, m in rows],
            ),
        ]
    )
    body += "\n\n" + windows(samples, seconds)
    if stuck:
        body += f"\n\nthreads still running at the end: {stuck}"
    if t.notes:
        body += "\n\nfirst notes:\n" + "\n".join(f"- {n}" for n in t.notes[:10])
    print(body)
    C.write_json(
        args.json,
        {
            "counts": dict(c),
            "start": start,
            "end": end,
            "samples": samples,
            "rss_growth": growth,
            "ok": ok,
            "notes": t.notes,
        },
    )
    return C.publish(args, "soak", "Soak (perf/soak.py)", body, not ok)


def windows(samples: list[dict], seconds: float) -> str:
    """The server's memory per window of the run: min / median / max, MiB."""
    span = 300.0 if seconds >= 1200 else max(60.0, seconds / 5)
    rows = []
    lo = 0.0
    while lo < seconds:
        w = [s for s in samples if lo <= s["t"] < lo + span]
        lo += span
        if not w:
            continue

        def mmm(key: str, w: list[dict] = w) -> str:
            v = [s[key] / 1024 for s in w]
            return f"{min(v):.1f} / {float(np.median(v)):.1f} / {max(v):.1f}"

        fds = [s["fds"] for s in w]
        rows.append(
            (
                f"{(lo - span) / 60:g}-{lo / 60:g}",
                mmm("rss_kb"),
                mmm("anon_kb"),
                mmm("shmem_kb"),
                f"{min(fds)}-{max(fds)}",
            )
        )
    return (
        "Server process per window (MiB, min / median / max; RssShmem is the workers' "
        "rings, mapped whole; fds while traffic runs include the soak's own connections):"
        "\n\n" + B.md_table(["minutes", "RSS", "RssAnon", "RssShmem", "open fds"], rows)
    )
