"""`[[groups]]` validation (runtime/groupconfig.py): every refusal names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringserve.runtime.config import ConfigError, load


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
