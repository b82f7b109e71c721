"""Which modules the build compiles with mypyc, and the switch back to their sources.

The frontend's cost per request is Python bytecode spread over some forty small
functions (perf/RESULTS.md): compiled by mypyc, the same source runs that Python in
about half the time (perf/dispatch_cost.py). The Python files stay the source of truth
and the fallback: an editable install, a build with `RINGSERVE_PURE_PYTHON=1` set, or a
machine without a C compiler installs them alone, and `RINGSERVE_PURE_PYTHON=1` at run
time makes an installed server (and its workers, which inherit the environment) import
the sources instead of the compiled modules beside them, so both can be compared on
one install (tests/test_native.py).

setup.py runs this file without importing the package: keep it to the standard library.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

PURE_ENV = "RINGSERVE_PURE_PYTHON"

# The request path, by repository folder. Left out, as mypyc cannot compile them as
# written, both mostly C: ipc/requesttypes.py (msgspec Struct classes, which
# ipc/requests.py decodes with) and frontend/finetimer.py (ctypes structures).
COMPILED_DIRS = ("ipc", "frontend")
NOT_COMPILED = ("ipc/requesttypes.py", "frontend/finetimer.py")
# The one shared library mypyc builds for them: ringserve/native__mypyc.*.so
GROUP = "ringserve.native"
# What `import ringserve` itself may load, besides the subpackages.
TOP_MODULES = ("ringserve", "ringserve.native", GROUP + "__mypyc")


def compiled_names(root: str) -> list[str]:
    """Repository-relative paths of the compiled modules, from a source tree."""
    out = []
    for d in COMPILED_DIRS:
        for name in sorted(os.listdir(os.path.join(root, d))):
            rel = f"{d}/{name}"
            if name.endswith(".py") and name != "__init__.py" and rel not in NOT_COMPILED:
                out.append(rel)
    return out


def module_name(rel: str) -> str:
    """`frontend/dispatch.py` -> `ringserve.frontend.dispatch`."""
    return "ringserve." + rel[: -len(".py")].replace("/", ".")


def is_compiled(module: ModuleType) -> bool:
    return any((module.__file__ or "").endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def describe() -> str:
    """What this process runs, for the server's start-up log line."""
    from ringserve.frontend import dispatch

    if is_compiled(dispatch):
        return "request path compiled (mypyc)"
    why = f"{PURE_ENV} is set" if pure_requested() else "no compiled modules installed"
    return f"request path in pure Python ({why})"


class SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds a ringserve module's .py file before the compiled module beside it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("ringserve.") or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            src = os.path.join(entry, leaf + ".py")
            if os.path.isfile(src):
                return importlib.util.spec_from_file_location(fullname, src)
        return None


def install_switch() -> None:
    """Under RINGSERVE_PURE_PYTHON, every ringserve module loads from its source."""
    if pure_requested() and not any(isinstance(f, SourcesFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, SourcesFirst())
