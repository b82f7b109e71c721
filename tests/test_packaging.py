"""Every source package on disk is listed for the wheel, under `ringserve`."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = cfg["package-dir"]
    assert all(p == "ringserve" or p.startswith("ringserve.") for p in listed)
    on_disk = set()
    for pkg, folder in dirs.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            on_disk.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    assert on_disk == listed, f"not listed: {on_disk - listed}; listed, missing: {listed - on_disk}"
