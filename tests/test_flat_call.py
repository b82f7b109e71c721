"""The worker's flat TensorFlow call: used only when it answers exactly as the public
signature call does (runtime/worker/model.py, Signature.try_flat_call)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import reference

pytest.importorskip("tensorflow")

from ringserve.runtime.worker.model import LoadedModel


def ints_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "a": rng.integers(-50, 50, (4, 3)).astype(np.int64),
        "b": rng.integers(-50, 50, (4, 3)).astype(np.int64),
    }


def test_flat_call_is_chosen_and_answers_like_the_public_call(model_root: Path) -> None:
    m = LoadedModel(model_root / "ints" / "1")
    m.warmup()
    assert m.call_paths() == {"serving_default": "flat", "double": "flat"}
    x = ints_inputs()
    got = {k: v.numpy() for k, v in m.signatures["serving_default"](x).items()}
    want = reference(model_root / "ints", x)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_a_flat_call_that_answers_differently_is_refused(model_root: Path) -> None:
    m = LoadedModel(model_root / "ints" / "1")
    sig = m.signatures["serving_default"]
    # What a TensorFlow whose private flat argument order changed would look like: the
    # probe call then disagrees with the public call and the public call stays.
    sig.fn._arg_keywords = list(reversed(sig.fn._arg_keywords))
    assert not sig.try_flat_call()
    assert sig.call_path == "public"
    x = ints_inputs()
    want = reference(model_root / "ints", x)
    np.testing.assert_array_equal(sig(x)["total"].numpy(), want["total"])


def test_a_tensorflow_without_the_flat_form_keeps_the_public_call(model_root: Path) -> None:
    m = LoadedModel(model_root / "linear" / "1")
    sig = m.signatures["serving_default"]
    sig.fn = sig.fn.__call__  # a plain callable: no _inference_function, no _arg_keywords
    assert not sig.try_flat_call()
    assert sig.call_path == "public"
