"""Request inputs: seeded random tensors shaped from the model's `metadata`, or files.

An unknown dimension (-1) is the batch dimension when it is the first one, else 1; an
input of unknown rank gets shape [batch]. Numeric inputs are drawn from a seeded
generator (floats standard normal, integers in [0, 10), so they stay valid as indices
for small vocabularies); strings are the bytes b"ringserve".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIGNATURE = "serving_default"


def signature_spec(meta: dict[str, Any], signature: str | None) -> dict[str, Any]:
    sigs = meta.get("signatures") or {}
    name = signature or DEFAULT_SIGNATURE
    if name not in sigs:
        raise ValueError(f"signature {name!r}: the model has {sorted(sigs)}")
    return sigs[name]  # type: ignore[no-any-return]


def random_inputs(
    spec: dict[str, Any], batch: int, seed: int = 0
) -> dict[str, np.ndarray[Any, Any]]:
    """Seeded inputs of `batch` rows for a signature's `inputs` map."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, t in sorted(spec["inputs"].items()):
        dims = t.get("shape")
        if dims is None:
            shape = [batch]
        else:
            shape = [(batch if i == 0 else 1) if d in (-1, None) else d for i, d in enumerate(dims)]
        dt = t["dtype"]
        if dt == "string":
            out[name] = np.full(shape, b"ringserve", dtype=object)
        elif dt.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(dt)
        elif dt == "bool":
            out[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[name] = rng.integers(0, 10, shape).astype(dt)
    return out


def file_inputs(path: str | Path, spec: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Inputs from a .npz (one array per input name) or a .npy (the signature's one input)."""
    p = Path(path)
    names = sorted(spec["inputs"])
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
        missing = set(names) - set(got)
        extra = set(got) - set(names)
        if missing or extra:
            raise ValueError(
                f"{p}: expected arrays named {names}, received {sorted(got)} "
                f"(missing {sorted(missing)}, extra {sorted(extra)})"
            )
        return got
    if p.suffix == ".npy":
        if len(names) != 1:
            raise ValueError(
                f"{p}: a .npy file holds one array but the signature has inputs {names}; "
                "use a .npz with one array per input"
            )
        return {names[0]: np.load(p, allow_pickle=False)}
    raise ValueError(f"input file {p}: expected .npy or .npz")
