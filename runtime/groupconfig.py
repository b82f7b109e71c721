"""`[[groups]]`: several models sharing worker processes (docs/groups.md).

A group is the unit of placement: one `[groups.instances]` table (device, threads,
CPU affinity, count) for worker processes that each load every model of the group.
The models keep their own `[[models]]` tables for everything that is not placement
(versions, batching, queues, labels); a grouped model that also sets `instances` or
`min_available_during_swap` is refused, naming both keys, so no setting is silently
ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import _V, GroupConfig, ModelConfig

GROUP_KEYS = {"name", "models", "instances"}
# Keys of [[models]] that belong to the group when the model is in one.
PLACEMENT_KEYS = ("instances", "min_available_during_swap")


def parse_groups(
    v: _V,
    raw: Any,
    models: tuple[ModelConfig, ...],
    explicit: dict[str, tuple[str, set[str]]],
    model_instances: dict[str, Any] | None,
) -> tuple[GroupConfig, ...]:
    """Validate `[[groups]]` against the models already parsed.

    `explicit`: for each model name, the key of its table and the keys it set itself
    (before TF Serving's flags added theirs), so the refusal names what the user wrote.
    """
    from .config import _NAME, GroupConfig, _instances

    if not isinstance(raw, list):
        raise v.fail("groups", "an array of tables ([[groups]])", raw)
    by_name = {m.name: m for m in models}
    owner: dict[str, str] = {}
    out: list[GroupConfig] = []
    for i, g in enumerate(raw):
        k = f"groups[{i}]"
        t = v.table(k, g, GROUP_KEYS)
        if "name" not in t:
            raise v.fail(f"{k}.name", "a group name", "<absent>")
        name = v.str_(f"{k}.name", t["name"])
        if not _NAME.match(name):
            raise v.fail(f"{k}.name", "letters, digits, '_', '.', '-' (max 64)", name)
        if any(o.name == name for o in out):
            raise v.fail(f"{k}.name", "unique group names", name)
        if name in by_name:
            # Worker positions and their metrics are labelled by group name where a
            # model's would be: one namespace, or a label would mean two things.
            raise v.fail(f"{k}.name", "a name no model uses (groups and models share one)", name)
        members = t.get("models")
        if not isinstance(members, list) or not members:
            raise v.fail(f"{k}.models", "a non-empty list of model names", members)
        seen: list[str] = []
        for m in members:
            if not isinstance(m, str):
                raise v.fail(f"{k}.models", "model names (strings)", m)
            if m not in by_name:
                raise v.fail(f"{k}.models", f"names of models in this config {sorted(by_name)}", m)
            if m in seen:
                raise v.fail(f"{k}.models", "each model once", m)
            if m in owner:
                raise v.fail(
                    f"{k}.models", f"models in no other group ({m!r} is in {owner[m]!r})", m
                )
            table, keys = explicit.get(m, ("models", set()))
            for pk in PLACEMENT_KEYS:
                if pk in keys:
                    raise v.fail(
                        f"{table}.{pk}",
                        f"no {pk} on a model of group {name!r}: its workers are the "
                        f"group's, set [groups.instances] of {name!r} instead",
                        "a value",
                    )
            seen.append(m)
            owner[m] = name
        inst_raw = t.get("instances", {})
        if model_instances and isinstance(inst_raw, dict):
            inst_raw = {**inst_raw, **model_instances}
        inst = _instances(v, f"{k}.instances", inst_raw)
        out.append(GroupConfig(name, tuple(seen), inst))
    return tuple(out)
