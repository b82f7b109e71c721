"""Which machines the rings are correct on.

A ring publishes a record by storing it, then storing `head`; the consumer loads
`head`, then the record. That order holds on x86-64, whose stores are seen in program
order (TSO). On weakly ordered CPUs (aarch64, ppc64le, riscv64) another core may see
the new `head` before the record's bytes, and Python offers no store-release or
load-acquire to prevent it. So the server refuses to start there rather than hand
out half-written tensors now and then. The client SDK uses no rings and runs
anywhere.
"""

from __future__ import annotations

import platform

# `platform.machine()` spellings of x86-64.
X86_64 = frozenset({"x86_64", "amd64", "AMD64", "x64"})


def refusal(machine: str | None = None) -> str | None:
    """Why a server cannot run on `machine` (default: this one), or None if it can."""
    m = platform.machine() if machine is None else machine
    if m in X86_64:
        return None
    return (
        f"this machine is {m or 'unknown'!s}, not x86-64: ringserve's shared-memory rings "
        "rely on x86-64 store ordering (a record is published by storing it, then its "
        "head word), which weakly ordered CPUs such as aarch64 do not guarantee; the "
        "server refuses to start rather than risk reading half-written tensors. The "
        "client SDK works on any machine."
    )
