"""Reading a server's /metrics in tests: fetch, parse with prometheus_client's parser."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.headers["Content-Type"]), r.read().decode()


def samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def get(sm: Samples, name: str, **labels: Any) -> float:
    """The one sample of `name` with exactly these labels (KeyError names it)."""
    key = (name, frozenset((k, str(v)) for k, v in labels.items()))
    if key not in sm:
        near = sorted(str(dict(lab)) for n, lab in sm if n == name)[:8]
        raise KeyError(f"{name}{labels} not exposed; {name} has {near}")
    return sm[key]


def total(sm: Samples, name: str, **labels: Any) -> float:
    """Sum of every sample of `name` whose labels include these."""
    want = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (n, lab), v in sm.items() if n == name and want <= lab)
