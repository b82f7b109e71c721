"""Worker groups without a server: `[[groups]]` validation (every refusal names the key),
the group worker's request-head checks, and the fairness rule on fake links."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ringserve.frontend import fairness
from ringserve.runtime.config import ConfigError, load
from ringserve.runtime.worker.held import Held, RequestError


def _config(tmp_path: Path, groups: str, models: str = "") -> Path:
    text = models
    for n in ("a", "b", "c"):
        (tmp_path / n / "1").mkdir(parents=True, exist_ok=True)
        if f'name = "{n}"' not in models:
            text += f'[[models]]\nname = "{n}"\nbase_path = "{tmp_path / n}"\n\n'
    p = tmp_path / "server.toml"
    # A bare key must come before the first table, or TOML puts it in that table.
    p.write_text(groups + text if not groups.startswith("[") else text + groups)
    return p


def test_group_parsed(tmp_path: Path) -> None:
    cfg = load(
        _config(
            tmp_path,
            '[[groups]]\nname = "g"\nmodels = ["a", "b"]\n'
            "  [groups.instances]\n  count = 2\n  intra_op_threads = 2\n",
        )
    )
    (g,) = cfg.groups
    assert g.name == "g" and g.models == ("a", "b")
    assert g.instances.count == 2 and g.instances.intra_op_threads == 2
    assert cfg.group_of("a") is g and cfg.group_of("c") is None


@pytest.mark.parametrize(
    ("groups", "models", "needle"),
    [
        ('[[groups]]\nname = "g"\nmodels = ["a", "zz"]\n', "", "groups[0].models"),
        ('[[groups]]\nname = "g"\nmodels = []\n', "", "non-empty list"),
        ('[[groups]]\nmodels = ["a"]\n', "", "groups[0].name"),
        ('[[groups]]\nname = "g"\nmodels = ["a", "a"]\n', "", "each model once"),
        (
            '[[groups]]\nname = "g"\nmodels = ["a"]\n[[groups]]\nname = "h"\nmodels = ["a"]\n',
            "",
            "'a' is in 'g'",
        ),
        (
            '[[groups]]\nname = "g"\nmodels = ["a"]\n[[groups]]\nname = "g"\nmodels = ["b"]\n',
            "",
            "unique group names",
        ),
        ('[[groups]]\nname = "b"\nmodels = ["a"]\n', "", "groups and models share one"),
        ('[[groups]]\nname = "g"\nmodels = ["a"]\nport = 1\n', "", "groups[0].port"),
        (
            '[[groups]]\nname = "g"\nmodels = ["a"]\n  [groups.instances]\n  count = 0\n',
            "",
            "groups[0].instances.count",
        ),
        (
            '[[groups]]\nname = "g"\nmodels = ["a"]\n',
            '[[models]]\nname = "a"\nbase_path = "{a}"\n  [models.instances]\n  count = 2\n\n',
            "models[0].instances",
        ),
        (
            '[[groups]]\nname = "g"\nmodels = ["a"]\n',
            '[[models]]\nname = "a"\nbase_path = "{a}"\nmin_available_during_swap = 1\n\n',
            "models[0].min_available_during_swap",
        ),
        ("groups = 3\n", "", "array of tables"),
    ],
)
def test_group_refused(tmp_path: Path, groups: str, models: str, needle: str) -> None:
    models = models.replace("{a}", str(tmp_path / "a"))
    with pytest.raises(ConfigError) as exc:
        load(_config(tmp_path, groups, models))
    assert needle in str(exc.value), str(exc.value)
    assert "server.toml" in str(exc.value)


# ---- the worker's request head (runtime/worker/held.py) ---------------------------------
class _Loaded:
    def __init__(self, *sigs: str) -> None:
        self.signatures = dict.fromkeys(sigs)


def _held() -> Held:
    h = Held()
    h.loaded = {("a", 1): _Loaded("serving_default"), ("b", 2): _Loaded("serving_default", "x")}
    h.failed = {("c", 1): "OSError: no such file"}
    return h


def test_head_names_a_held_model() -> None:
    h = _held()
    loaded, sig = h.target([1, "x", None, 0.0, "b", 2])
    assert loaded is h.loaded[("b", 2)] and sig == "x"


@pytest.mark.parametrize(
    ("head", "code", "needle"),
    [
        ([1, "serving_default", None, 0.0], "INTERNAL", "names no model"),
        ([1, "serving_default", None, 0.0, "a", "1"], "INTERNAL", "version (int)"),
        ([1, "serving_default", None, 0.0, b"a", 1], "INTERNAL", "model (string)"),
        ([1, "serving_default", None, 0.0, "a", 3], "INTERNAL", "not held"),
        ([1, "serving_default", None, 0.0, "c", 1], "UNAVAILABLE", "failed to load"),
        ([1, "nope", None, 0.0, "a", 1], "NOT_FOUND", "field 'signature'"),
        ([1, 7, None, 0.0, "a", 1], "INVALID_ARGUMENT", "field 'signature'"),
        ([1, "serving_default", None, 0.0, "x" * 10_000, 1], "INTERNAL", "..."),
    ],
)
def test_head_refused(head: list[Any], code: str, needle: str) -> None:
    with pytest.raises(RequestError) as exc:
        _held().target(head)
    assert exc.value.code == code and needle in exc.value.message
    assert len(exc.value.message) < 1000  # never echoes a hostile field whole


def test_head_without_model_for_a_single_model_worker() -> None:
    h = Held()
    h.loaded = {("a", 1): _Loaded("serving_default")}
    assert h.target([1, "serving_default", None, 0.0])[1] == "serving_default"


# ---- fairness (frontend/fairness.py) ----------------------------------------------------
class _V:
    def __init__(self, queued: int = 0) -> None:
        self.queue = [object()] * queued


class _Job:
    def __init__(self, v: _V) -> None:
        self.parts = [(SimpleNamespace(version=v), 0, 1)]


def _link(serves: list[_V], held: list[_V]) -> SimpleNamespace:
    return SimpleNamespace(serves=serves, inflight={i: _Job(v) for i, v in enumerate(held)}, turn=0)


def test_share_cap() -> None:
    a, b, c = _V(5), _V(0), _V(0)
    # Alone, a model may fill the ring.
    assert fairness.has_share(_link([a, b, c], [a]), a, 2)
    # With another model waiting, it has half.
    b.queue = [object()]
    assert not fairness.has_share(_link([a, b, c], [a]), a, 2)
    assert fairness.has_share(_link([a, b, c], [a]), b, 2)
    # Three busy models on a ring of two: one record each, never zero.
    c.queue = [object()]
    assert fairness.has_share(_link([a, b, c], [a]), c, 2)
    assert not fairness.has_share(_link([a, b, c], [c]), c, 2)


def test_round_robin_starts_after_the_last_served() -> None:
    a, b, c = _V(), _V(), _V()
    ln = _link([a, b, c], [])
    assert fairness.rotation(ln) == [a, b, c]
    fairness.served(ln, a)
    assert fairness.rotation(ln) == [b, c, a]
    fairness.served(ln, c)
    assert fairness.rotation(ln) == [a, b, c]
