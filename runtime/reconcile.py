"""Reconcile: bring what runs to what is wanted (the config's models, the version
folders their policy selects, the placements of their workers). The same step serves
start-up, the version-folder poll and SIGHUP: new workers are loaded and warmed
before they get traffic, and what goes away is drained before it stops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ringserve.frontend import registry as R

from .config import ModelConfig, list_versions
from .grouped import Content
from .placement import Placement, place
from .settings import model_settings
from .slots import UNAVAILABLE, Slot, kill, log

if TYPE_CHECKING:
    from .supervisor import Supervisor


def valid_versions(base: Path) -> list[int]:
    """Version folders that hold a SavedModel (a half-copied one has no .pb yet)."""
    return [
        v
        for v in list_versions(base)
        if (base / str(v) / "saved_model.pb").exists()
        or (base / str(v) / "saved_model.pbtxt").exists()
    ]


class Reconciler:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def reconcile_all(self) -> None:
        """Every model with its own workers, then every group (grouped.py)."""
        sup = self.sup
        for m in sup.cfg.models:
            if sup.cfg.group_of(m.name) is None:
                self.reconcile(m)
        for g in sup.cfg.groups:
            sup.groups.reconcile(g)

    def reconcile(self, m: ModelConfig) -> None:
        """Bring one model's versions and workers to what its config and folder want."""
        sup = self.sup
        if sup.stopping:
            return
        wanted = self.wanted_versions(m)
        model = sup.fe.registry.models[m.name]
        for number in wanted:
            self.fit_workers(m, number)
        # An unwanted version goes only once every wanted one serves with its full
        # count of workers (or min_available_during_swap): a new version that fails
        # to load must not take an old one down with it, and a swap must not leave
        # one worker carrying what `count` workers carried.
        need = m.swap_threshold
        all_serving = all(
            n in model.versions
            and model.versions[n].state == R.AVAILABLE
            and len(model.versions[n].serving_links()) >= need
            for n in wanted
        )
        for number, v in list(model.versions.items()):
            if number not in wanted and v.state != R.UNLOADING and all_serving:
                sup.task(self.unload_version(m.name, number))

    def wanted_versions(self, m: ModelConfig) -> list[int]:
        """The versions the model's policy selects on disk; registers the model and its
        wanted versions (LOADING) with the frontend, noting what cannot be loaded."""
        sup = self.sup
        model = sup.fe.registry.set_model(model_settings(m))
        valid = valid_versions(m.base_path)
        wanted = m.version_policy.select(valid)
        incomplete = [n for n in list_versions(m.base_path) if n not in valid]
        notes = []
        if not wanted:
            notes.append(
                f"no version folder with a saved_model.pb under {m.base_path} "
                f"matches version_policy {m.version_policy.describe()!r}"
            )
        if incomplete:
            notes.append(f"version folders {incomplete} have no saved_model.pb yet: not loaded")
        message = "; ".join(notes)
        if message and message != model.message:
            log(f"model {m.name}: {message}")
        model.message = message
        for number in wanted:
            v = model.versions.get(number)
            if v is None or v.state == R.UNLOADING:
                if v is None:
                    log(f"model {m.name}: loading version {number}")
                v = sup.fe.registry.version_state(m.name, number)
                v.state = R.LOADING
        return wanted

    def fit_workers(self, m: ModelConfig, version: int, content: Content | None = None) -> None:
        """Start missing workers; roll those whose placement changed, one at a time.

        A slot being replaced stays wanted (it serves) until its successor is ready;
        `replacing` keeps a later reconcile from starting a second roll for it.
        """
        sup = self.sup
        want = [place(m.instances, i) for i in range(m.instances.count)]
        have = [
            s
            for s in sup.slots
            if s.name == m.name
            and s.version == version
            and s.wanted
            and (s.content is None) == (content is None)
        ]
        for s in have:
            s.model = m
        to_roll: list[tuple[Slot, Placement]] = []
        for p in want:
            same = [s for s in have if s.placement.index == p.index]
            # A group's worker is also replaced when what it holds changed.
            if any(s.placement == p and s.content == content and not s.stale for s in same):
                continue  # in place, or its replacement is already starting
            old = [s for s in same if not s.replacing]
            if old:
                old[0].replacing = True
                to_roll.append((old[0], p))
            elif not same:
                self.add_slot(m, version, p, content)
        for s in have:
            if s.placement.index >= len(want) and not s.replacing:
                s.replacing = True
                sup.task(self.retire(s))
        if to_roll:
            sup.task(self.roll(m, version, to_roll, content))

    def add_slot(
        self, m: ModelConfig, version: int, p: Placement, content: Content | None = None
    ) -> Slot:
        slot = Slot(m, version, p, content=content)
        self.sup.slots.append(slot)
        self.sup.spawner.spawn(slot)
        return slot

    async def roll(
        self,
        m: ModelConfig,
        version: int,
        pairs: list[tuple[Slot, Placement]],
        content: Content | None = None,
    ) -> None:
        """Replace workers one by one: the new one serves before the old one stops."""
        sup = self.sup
        for i, (old, p) in enumerate(pairs):
            if sup.stopping or not old.wanted:
                continue
            if old.placement != p:
                log(f"rolling {m.name}/{version}/w{p.index}: {old.placement} -> {p}")
            elif old.stale:
                log(f"rolling {m.name}/w{p.index}: a fresh worker retries what failed to load")
            else:
                log(f"rolling {m.name}/w{p.index}: the group's models or versions changed")
            new = self.add_slot(m, version, p, content)
            try:
                limit = sup.cfg.server.worker_start_timeout_seconds
                await asyncio.wait_for(new.ready.wait(), limit)
            except TimeoutError:
                log(f"roll of {m.name}/{version}/w{p.index} abandoned: new worker not ready")
                await self.retire(new)
                for o, _ in pairs[i:]:
                    o.replacing = False
                return
            if content is not None and sup.groups.regressed(m.name, content, old, new):
                await self.retire(new)
                for o, _ in pairs[i:]:
                    o.replacing = False
                return
            if old.stale and not sup.groups.improved(m.name, old, new):
                await self.retire(new)  # a load retry that loaded nothing more
                old.stale = old.replacing = False
                continue
            await self.retire(old)

    async def unload_version(self, model: str, number: int) -> None:
        """Drain a version no longer wanted, stop its workers, forget it."""
        sup = self.sup
        reg = sup.fe.registry
        m = reg.models.get(model)
        if m is None or number not in m.versions:
            return
        v = m.versions[number]
        v.state = R.UNLOADING
        log(f"model {model}: unloading version {number}")
        deadline = time.monotonic() + sup.cfg.server.grace_seconds
        while (sup.fe.dispatcher.queued(v) or sup.fe.dispatcher.inflight(v)) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.005)
        # A model's own workers; a group's workers hold other models too and go with
        # the group's roll.
        slots = [
            s for s in sup.slots if s.name == model and s.version == number and s.content is None
        ]
        await asyncio.gather(*(self.retire(s) for s in slots))
        sup.fe.dispatcher.fail_queue(v, UNAVAILABLE, f"model {model!r} version {number} unloaded")
        if m.versions.get(number) is v and v.state == R.UNLOADING:
            del m.versions[number]
            log(f"model {model}: version {number} unloaded")

    async def retire(self, slot: Slot) -> None:
        """Stop one worker after what it holds is answered (bounded by the grace period)."""
        sup = self.sup
        h = slot.handle
        if h is not None and slot.content is not None and h.state == "ready":
            await sup.groups.release_versions(h)
        slot.wanted = False
        if slot.retry is not None:
            slot.retry.cancel()
            slot.retry = None
        h = slot.handle
        if h is not None:
            h.state = "stopping"
            h.link.draining = True
            deadline = time.monotonic() + sup.cfg.server.grace_seconds
            while h.link.inflight and time.monotonic() < deadline and h.exit_code is None:
                await asyncio.sleep(0.005)
            if h.exit_code is None and not h.link.send_stop():
                kill(h.pid)
            kill_at = time.monotonic() + 10.0
            while slot.handle is h and time.monotonic() < kill_at:
                await asyncio.sleep(0.005)
            if slot.handle is h:
                kill(h.pid)
            while slot.handle is h:
                await asyncio.sleep(0.005)
        if slot in sup.slots:
            sup.slots.remove(slot)

    async def poll_versions(self) -> None:
        """Pick up version folders that appear or disappear, without a restart."""
        sup = self.sup
        while True:
            interval = sup.cfg.server.version_poll_seconds  # re-read: a reload may change it
            await asyncio.sleep(interval if interval > 0 else 1.0)
            if interval <= 0:
                continue
            if sup.stopping:
                return
            self.reconcile_all()
