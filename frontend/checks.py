"""The checks an `infer` passes before it is queued: signature, inputs, requested
outputs, output regions, timeout, batch rows. Plain functions of the request and the
signature; each failure is a ProtocolError naming the field, the expected and the
received value."""

from __future__ import annotations

from typing import Any

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError, clip
from ringserve.ipc.fdslice import FdSlice
from ringserve.ipc.requests import WireTensor
from ringserve.ipc.tensors import STRING, check_wire_tensor, count, itemsize, shape_matches

from .pending import Pending
from .regions import Region, Regions
from .registry import ModelState, VersionState

# Longest accepted timeout_ms (about 24.8 days): a timer far past that overflows the
# loop's clock arithmetic.
MAX_TIMEOUT_MS = 2**31 - 1


def check_signature(sig_name: Any, model: ModelState, v: VersionState) -> dict[str, Any]:
    if not isinstance(sig_name, str):
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'signature': expected a string, received {clip(sig_name)}",
        )
    sig = v.signatures.get(sig_name)
    if sig is None:
        raise ProtocolError(
            E.NOT_FOUND,
            f"field 'signature': model {model.name!r} version {v.number} has signatures "
            f"{sorted(v.signatures)}, received {clip(sig_name)}",
        )
    return sig  # type: ignore[no-any-return]


def check_inputs(
    inputs: Any, spec: dict[str, Any], regions: Regions | None, max_rank: int
) -> list[Any]:
    if not isinstance(inputs, dict):
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'inputs': expected a map of name to tensor, received {type(inputs).__name__}",
        )
    missing = sorted(set(spec) - set(inputs))
    if missing:
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'inputs': missing {missing}; expected {sorted(spec)}, "
            f"received {clip(sorted(map(str, inputs)))}",
        )
    extra = sorted(map(str, set(inputs) - set(spec)))
    if extra:
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'inputs': unknown {clip(extra)}; expected {sorted(spec)}, "
            f"received {clip(sorted(map(str, inputs)))}",
        )
    out = []
    for name in sorted(spec):
        want = spec[name]
        field = f"inputs.{name}"
        dtype, shape, data = check_wire_tensor(field, inputs[name], max_rank)
        if "shm" in inputs[name]:
            if regions is None:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.shm: shared-memory tensors need a Unix-socket connection",
                )
            if dtype == STRING:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.shm: expected a numeric dtype in shared memory, received string",
                )
            region = regions.get(f"{field}.shm", data)
            data = region.slice(f"{field}.shm", data, count(shape) * itemsize(dtype))
        if dtype != want["dtype"]:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}.dtype: expected {want['dtype']}, received {dtype}",
            )
        if want["shape"] is not None and not shape_matches(want["shape"], shape):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}.shape: expected {want['shape']} (-1 = any), received {clip(shape)}",
            )
        out.append((name, dtype, shape, data))
    return out


def check_outputs(wanted: Any, spec: dict[str, Any]) -> list[str] | None:
    if wanted is None:
        return None
    if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'outputs': expected a list of output names, received {clip(wanted)}",
        )
    unknown = sorted(set(wanted) - set(spec))
    if unknown:
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'outputs': expected names from {sorted(spec)}, received {clip(unknown)}",
        )
    return list(dict.fromkeys(wanted))


def check_output_shm(
    refs: Any, spec: dict[str, Any], regions: Regions | None
) -> dict[str, tuple[Region, int, int]]:
    if regions is None:
        raise ProtocolError(
            E.INVALID_ARGUMENT, "field 'output_shm': needs a Unix-socket connection"
        )
    if not isinstance(refs, dict):
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'output_shm': expected a map of output name to region, received {clip(refs)}",
        )
    out = {}
    for name, ref in refs.items():
        field = f"output_shm.{clip(name, 64)}"
        if name not in spec:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}: expected an output name from {sorted(spec)}, received {clip(name)}",
            )
        if spec[name]["dtype"] == STRING:
            raise ProtocolError(
                E.INVALID_ARGUMENT, f"{field}: string outputs cannot go to shared memory"
            )
        region = regions.get(field, ref)
        off, size = region.check(field, ref, None)
        out[name] = (region, off, size)
    return out


def check_timeout(timeout: Any, default_ms: float) -> Any:
    """The request's timeout in milliseconds, or a false value for none."""
    if timeout is None:
        return default_ms or None
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 < timeout < MAX_TIMEOUT_MS  # NaN fails both comparisons
    ):
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"field 'timeout_ms': expected a positive finite number below {MAX_TIMEOUT_MS}, "
            f"received {clip(timeout)}",
        )
    return timeout


def check_rows(p: Pending, max_batch_size: int) -> None:
    """Set the request's batch rows and batch key (when every input shares a first
    dimension), and refuse more rows than a batch may hold."""
    ts = p.tensors
    if len(ts) == 1:  # the common case, without the set and the generator
        shape = ts[0][2]
        if shape:
            p.rows = shape[0]
            p.key = (p.sig, tuple(p.wanted or ()), (ts[0][0], tuple(shape[1:])))
    else:
        dims = {t[2][0] if t[2] else None for t in ts}
        if len(dims) == 1 and None not in dims:
            p.rows = dims.pop()
            p.key = (p.sig, tuple(p.wanted or ()), *((t[0], tuple(t[2][1:])) for t in ts))
    if max_batch_size and p.rows is not None and p.rows > max_batch_size:
        name = p.tensors[0][0]
        raise ProtocolError(
            E.INVALID_ARGUMENT,
            f"inputs.{name}.shape[0]: expected at most max_batch_size "
            f"({max_batch_size}) rows, received {p.rows}",
        )


def short_read(p: Pending) -> str | None:
    """Why a request read short from a client region that shrank under it (zeros went
    into the ring, never SIGBUS), or None."""
    for t in p.tensors:
        data = t[3]
        if type(data) is FdSlice and data.short is not None:
            return data.describe_short()
    return None


# Input checks remembered per signature and tensor layout: (spec, max_rank, names,
# dtypes and shapes) -> the checked (name, dtype, shape, nbytes) in signature order.
# The general checks run once for a layout; a later request with the same layout only
# has its data lengths compared. Bounded: cleared when full (a client cycling through
# shapes costs the general checks again, never memory).
CHECKED_LAYOUTS = 1024


class TypedInputChecks:
    """`check_inputs` for requests decoded by ipc/requests.py (numeric `data` tensors,
    types already checked while decoding), remembered per layout."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], tuple[dict[str, Any], list[tuple[str, str, int]]]] = {}
        # The last single-input layout that hit, compared field by field: a run of
        # requests of one layout (the usual traffic) builds and hashes no key.
        self._last: tuple[Any, ...] = ()

    def check(
        self, inputs: dict[str, WireTensor], spec: dict[str, Any], max_rank: int
    ) -> list[Any]:
        if len(inputs) == 1:  # the common case: one tuple for the key, not four objects
            ((n, t),) = inputs.items()
            last = self._last
            if (
                last
                and last[0] is spec
                and last[1] == max_rank
                and last[2] == n
                and last[3] == t.dtype
                and last[4] == t.shape
            ):
                name, dtype, nbytes = last[5]
                if len(t.data) == nbytes:
                    return [(name, dtype, t.shape, t.data)]
            key: tuple[Any, ...] = (id(spec), max_rank, n, t.dtype, tuple(t.shape))
        else:
            key = (id(spec), max_rank, *[(n, t.dtype, tuple(t.shape)) for n, t in inputs.items()])
        hit = self._seen.get(key)
        # The spec is held by the entry, so its id cannot be reused while it is there.
        if hit is not None and hit[0] is spec:
            out = []
            for name, dtype, nbytes in hit[1]:
                t = inputs[name]
                if len(t.data) != nbytes:
                    break  # the general checks say what is wrong
                out.append((name, dtype, t.shape, t.data))
            else:
                if len(inputs) == 1:
                    ((n, t),) = inputs.items()
                    self._last = (spec, max_rank, n, t.dtype, list(t.shape), hit[1][0])
                return out
        plain = {n: {"dtype": t.dtype, "shape": t.shape, "data": t.data} for n, t in inputs.items()}
        out = check_inputs(plain, spec, None, max_rank)
        if len(self._seen) >= CHECKED_LAYOUTS:
            self._seen.clear()
        self._seen[key] = (spec, [(n, dt, count(sh) * itemsize(dt)) for n, dt, sh, _ in out])
        return out
