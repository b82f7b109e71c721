"""The session's /dev/shm leak check judges this session's objects only: the host's
other suites and benchmarks create and remove theirs meanwhile."""

from __future__ import annotations

import os

from conftest import shm_entries


def test_counts_only_names_that_carry_this_sessions_pid() -> None:
    pid = os.getpid()
    other = pid + 1
    ours = {f"ringserve-client-{pid}-buf", f"ringserve-t{pid}-4242-ring", f"ringserve-test-x-{pid}"}
    theirs = {
        f"ringserve-client-{other}-buf",  # another session's client region
        f"ringserve-t{other}-4242-ring",  # another session's server
        f"ringserve-client-{pid}0-buf",  # a pid that begins with ours
        f"not-ringserve-client-{pid}-buf",
    }
    before = shm_entries()
    made = []
    try:
        for name in sorted(ours | theirs):
            with open(f"/dev/shm/{name}", "x"):
                made.append(name)
        assert shm_entries() - before == ours
        assert shm_entries(other) >= {
            f"ringserve-client-{other}-buf",
            f"ringserve-t{other}-4242-ring",
        }
    finally:
        for name in made:
            os.unlink(f"/dev/shm/{name}")
    assert shm_entries() == before
