"""Sharing a group worker's ring between its models (docs/groups.md, "Fairness").

A group's worker serves several models from one ring of `worker_inflight` records,
while each model keeps its own queue. Two rules keep one model's burst from starving
another of the same group:

- **Share cap.** On one worker, a model version may hold at most
  `max(1, limit // busy)` records, where `busy` counts the versions the worker serves
  that have requests queued or records on that worker. A model alone gets the whole
  ring; two busy models get half each.
- **Round robin.** When a record of the worker completes, the freed room is offered
  to the queues of the versions it serves in turn, starting after the version that
  was given the previous record, so a waiting model is next, not last.

So a request of a quiet model waits at most for what the worker already holds plus
one record of each other busy model, whatever the others' queue depths. Shares are
counted in records (a batch is one record), the unit the worker computes.

A model's own worker (no group) serves one version: none of this applies and the
dispatch path is unchanged.
"""

from __future__ import annotations

from typing import Any


def held_by(link: Any, v: Any) -> int:
    """Records of version `v` in the link's ring."""
    return sum(1 for job in link.inflight.values() if job.parts[0][0].version is v)


def has_share(link: Any, v: Any, limit: int) -> bool:
    """May `v` place one more record on this group worker's ring?"""
    mine = 0
    others: set[int] = set()
    for job in link.inflight.values():
        owner = job.parts[0][0].version
        if owner is v:
            mine += 1
        else:
            others.add(id(owner))
    busy = 1 + sum(1 for s in link.serves if s is not v and (s.queue or id(s) in others))
    return mine < max(1, limit // busy)


def rotation(link: Any) -> list[Any]:
    """The versions a group worker serves, in the order its free room is offered."""
    serves = link.serves
    if not serves:
        return []
    k = link.turn % len(serves)
    return serves[k:] + serves[:k]


def served(link: Any, v: Any) -> None:
    """`v` was given a record on this group worker: the next turn is the one after."""
    try:
        link.turn = link.serves.index(v) + 1
    except ValueError:
        pass
