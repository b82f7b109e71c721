"""The batcher's service-time model: a decayed least-squares line over reported times."""

from __future__ import annotations

import pytest

from ringserve.frontend.servicetime import ServiceTime


def test_nothing_observed_estimates_zero() -> None:
    assert ServiceTime().estimate(8) == 0.0


def test_one_batch_size_gives_its_mean() -> None:
    s = ServiceTime()
    for t in (0.001, 0.003):
        s.observe(16, t)
    assert s.estimate(16) == pytest.approx(0.002, rel=0.05)
    assert s.estimate(1) == pytest.approx(0.002, rel=0.05)  # no slope to extrapolate


def test_fits_fixed_plus_per_row_cost() -> None:
    s = ServiceTime()
    for rows in (1, 4, 16, 32, 7, 25):
        s.observe(rows, 340e-6 + 7.5e-6 * rows)
    assert s.estimate(1) == pytest.approx(347.5e-6, rel=1e-6)
    assert s.estimate(32) == pytest.approx(580e-6, rel=1e-6)


def test_follows_a_change_and_never_goes_negative() -> None:
    s = ServiceTime(decay=0.9)
    for _ in range(50):
        s.observe(1, 1e-3)
        s.observe(32, 2e-3)
    for _ in range(200):  # the host got slower
        s.observe(1, 2e-3)
        s.observe(32, 4e-3)
    assert s.estimate(32) == pytest.approx(4e-3, rel=0.01)
    noisy = ServiceTime()
    noisy.observe(1, 5e-3)
    noisy.observe(32, 1e-3)  # bigger looked cheaper: slope clamped to 0
    assert noisy.estimate(64) >= 0.0
    assert noisy.estimate(64) == pytest.approx(noisy.estimate(1))
