"""How late the frontend's fine timer (frontend/finetimer.py, a timerfd the uvloop loop
watches) wakes the loop: the figure behind dispatch's SPIN_LEAD_S, the spin kept
before a batch is due. Arms the timer --delay-us ahead --count times, one at a time,
and prints the lateness percentiles (wake-up time minus the armed time, callback
dispatch included).

    python perf/timer_lateness.py [--delay-us 200] [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop

from ringserve.frontend.finetimer import FineTimer


async def measure(delay_s: float, count: int) -> list[float]:
    loop = asyncio.get_running_loop()
    late: list[float] = []
    state: dict[str, Any] = {}

    def fired() -> None:
        late.append(time.perf_counter() - float(state["at"]))
        state["done"].set_result(None)

    timer = FineTimer(loop, fired)
    for _ in range(count):
        state["done"] = loop.create_future()
        state["at"] = time.perf_counter() + delay_s
        timer.arm(delay_s)
        await state["done"]  # type: ignore[misc]
    return sorted(late)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python perf/timer_lateness.py", description=__doc__)
    ap.add_argument("--delay-us", type=float, default=200.0)
    ap.add_argument("--count", type=int, default=2000)
    a = ap.parse_args()
    late = uvloop.run(measure(a.delay_us / 1e6, a.count))
    pick = {q: late[min(len(late) - 1, int(q / 100 * len(late)))] * 1e6 for q in (50, 90, 99)}
    print(
        f"fine timer armed {a.delay_us:.0f} us ahead, {a.count} times: late by "
        + ", ".join(f"p{q} {v:.1f} us" for q, v in pick.items())
    )


if __name__ == "__main__":
    main()
