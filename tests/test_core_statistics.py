"""The shared bootstrap interval: seeded, contains the estimate, narrows as n grows, degenerate cases."""

from __future__ import annotations

import math

import numpy as np

from biasbench.core.statistics import bootstrap_ci


def test_interval_contains_the_median_and_is_reproducible() -> None:
    x = np.random.default_rng(1).normal(size=200)
    lo, hi = bootstrap_ci(x)
    assert lo < float(np.median(x)) < hi
    assert bootstrap_ci(x) == (lo, hi)


def test_interval_narrows_as_n_grows() -> None:
    rng = np.random.default_rng(2)
    widths = []
    for n in (25, 400):
        lo, hi = bootstrap_ci(rng.normal(size=n))
        widths.append(hi - lo)
    # The median's standard error falls as 1/sqrt(n): 16x the items, about a quarter of the width.
    assert widths[1] < 0.5 * widths[0]


def test_normal_mean_interval_matches_the_textbook_width() -> None:
    # For the mean of n = 2000 standard normals the 95 % interval is ±1.96/sqrt(n) ≈ ±0.0438.
    x = np.random.default_rng(3).normal(size=2000)
    lo, hi = bootstrap_ci(x, np.mean)
    assert abs((hi - lo) / 2 - 1.96 / math.sqrt(2000)) < 0.006


def test_degenerate_inputs() -> None:
    assert bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([0.3, float("nan")]))
