"""Hostile frames against the real server's frame reader and request checks.

A brief derandomized hypothesis run (fixed examples, so CI is stable), and a replay of
the checked-in corpus of the nastiest frames found (tests/corpus/), each with the reply
it must get. perf/fuzz.py runs the same fuzzer for as long as asked.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import fuzzing
import pytest
from hypothesis import HealthCheck, given, settings

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess

from rawclient import Raw

CORPUS = Path(__file__).parent / "corpus"
MAX_FRAME = 8 * 1024 * 1024  # the shared server's max_frame_bytes (conftest)


@pytest.fixture(scope="module")
def watched(server: ServerProcess) -> tuple[ServerProcess, Client, int]:
    assert server.proc is not None
    c = Client(server.unix_url, timeout=10.0)
    c.health()
    return server, c, fuzzing.rss(server.proc.pid)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=fuzzing.cases(MAX_FRAME))
def _fuzz(watched: tuple[ServerProcess, Client, int], case: list[fuzzing.Frame]) -> None:
    server, healthy, _ = watched
    for url in (server.unix_url, server.tcp_url):
        fuzzing.run_case(url, case)
    assert healthy.health()["live"] is True  # another connection is still served


def test_fuzz_frames(watched: tuple[ServerProcess, Client, int]) -> None:
    server, healthy, before = watched
    _fuzz(watched)
    assert server.proc is not None and server.proc.poll() is None
    grown = fuzzing.rss(server.proc.pid) - before
    assert grown < 128 * 1024 * 1024, f"server grew by {grown >> 20} MiB"
    healthy.close()


def corpus() -> list[tuple[str, dict[str, object]]]:
    index = json.loads((CORPUS / "index.json").read_text())
    return sorted(index.items())


@pytest.mark.parametrize("name, want", corpus(), ids=[n for n, _ in corpus()])
def test_corpus_replay(server: ServerProcess, name: str, want: dict[str, object]) -> None:
    data = gzip.decompress((CORPUS / f"{name}.gz").read_bytes())
    with Raw(server.unix_url) as raw:
        raw.send_bytes(data)
        r = raw.recv()
        assert r["ok"] is False, r
        assert r["error"]["code"] == want["code"], r
        assert len(r["error"]["message"]) < fuzzing.MESSAGE_MAX
        for word in want.get("words", []):  # type: ignore[attr-defined]
            assert word in r["error"]["message"], r
        if want.get("closes"):
            assert raw.closed_by_peer()
        else:
            raw.send({"id": 7, "op": "health"})
            assert raw.recv()["ok"] is True
