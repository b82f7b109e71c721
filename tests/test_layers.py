"""Architecture boundaries: who may import TensorFlow, what lands in site-packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ringserve import native

CHECK = """
import sys, importlib
for name in {mods!r}:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
print("TF" if bad else "clean")
"""


@pytest.mark.parametrize(
    "mods",
    [
        ["ringserve", "ringserve.client", "ringserve.client.aio", "ringserve.client.sync"],
        ["ringserve.frontend.server", "ringserve.frontend.dispatch"],
        ["ringserve.runtime.supervisor", "ringserve.runtime.cli", "ringserve.runtime.config"],
        ["ringserve.ipc.ring", "ringserve.ipc.records", "ringserve.ipc.wire"],
    ],
)
def test_never_imports_tensorflow(mods: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(mods=mods)],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    )
    assert out.stdout.strip() == "clean", out


def test_sdk_imports_only_ipc_and_itself() -> None:
    code = (
        "import sys, ringserve.client\n"
        "print(sorted(m for m in sys.modules if m.startswith('ringserve')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    mods = eval(out.stdout)
    top = native.TOP_MODULES
    assert all(m.split(".")[1] in ("client", "ipc") for m in mods if m not in top), mods


def test_no_top_level_runtime_or_ipc_installed() -> None:
    code = (
        "import importlib.util as u\n"
        "print([n for n in ('ipc', 'runtime', 'frontend', 'client', 'pkg') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_worker_is_a_fresh_interpreter_with_settings_before_tf() -> None:
    """configure_process must run before TensorFlow is imported: check the order."""
    import inspect

    from ringserve.runtime.worker import main

    src = inspect.getsource(main.main)
    assert src.index("configure_process(spec)") < src.index("from . import model")
