"""The build: pyproject.toml holds the metadata; this file adds the compiled modules.

mypyc compiles the request path (ringserve/native.py lists it) when it can: not in an
editable install (a stale compiled module would shadow the source being edited), not
with RINGSERVE_PURE_PYTHON=1 set, and not when compiling fails (no C compiler, say):
then the wheel holds the Python files alone, which is a slower server, not a broken one.
"""

from __future__ import annotations

import runpy
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
native: dict[str, Any] = runpy.run_path(str(ROOT / "pkg" / "native.py"))
# Where each package's files live in the repository.
FOLDERS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"
]["package-dir"]


def wanted() -> bool:
    return not native["pure_requested"]()


class NativeDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # a platform wheel, though ext_modules starts empty
        return wanted()


class BuildNative(build_ext):
    """mypyc type-checks and generates C when build_ext is set up, which only a build
    does (not the metadata steps); compiling happens in run."""

    def finalize_options(self) -> None:
        if not (self.inplace or getattr(self, "editable_mode", False)) and wanted():
            try:
                self.distribution.ext_modules = self._mypycify()
            except (Exception, SystemExit) as exc:  # mypyc exits on a type error
                _fallback(exc)
        super().finalize_options()

    def run(self) -> None:
        if self.inplace:  # an editable install: the sources run as they are edited
            return
        try:
            super().run()
        except Exception as exc:
            _fallback(exc)
            built: list[Any] = getattr(self, "extensions", [])  # (untyped in the stubs)
            for ext in built:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            built.clear()

    def _mypycify(self) -> list[Any]:
        from mypyc.build import mypycify

        # mypyc names modules by their place in a package tree, so it compiles a copy
        # laid out as installed (ringserve/frontend/..., not frontend/...).
        stage = ROOT / "build" / "native-src"
        shutil.rmtree(stage, ignore_errors=True)
        for pkg, folder in FOLDERS.items():
            dest = stage.joinpath(*pkg.split("."))
            skip = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
            shutil.copytree(ROOT / folder, dest, dirs_exist_ok=True, ignore=skip)
        paths = [str(stage / "ringserve" / rel) for rel in native["compiled_names"](str(ROOT))]
        return mypycify(  # type: ignore[no-any-return]
            ["--config-file", str(ROOT / "pyproject.toml"), *paths],
            opt_level="3",
            debug_level="0",
            group_name=native["GROUP"],
            target_dir=str(ROOT / "build" / "native-c"),
        )


def _fallback(exc: BaseException) -> None:
    why = f"ringserve: not compiling the request path ({exc!r}); installing it as pure Python"
    print(why, file=sys.stderr)


setup(distclass=NativeDistribution, cmdclass={"build_ext": BuildNative})
