"""Each checkpoint's own measurement uncertainty: Wilson intervals for declared proportions.

Known answers from the Wilson (1927) score formula written out by hand (not scipy's):
centre (k + z²/2) / (n + z²), half-width z·√(k(n − k)/n + z²/4) / (n + z²), z = 1.959963984540054
(the 97.5 % normal quantile); k = 0 gives [0, z²/(n + z²)]. Values that are not k/n, or without n,
get none; only keys whose metric declares them proportions are given one.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import biasbench
from biasbench.reports.uncertainty import binomial_interval

Z = 1.959963984540054


def _wilson(k: int, n: int) -> tuple[float, float]:
    centre = (k + Z**2 / 2) / (n + Z**2)
    half = Z * math.sqrt(k * (n - k) / n + Z**2 / 4) / (n + Z**2)
    return centre - half, centre + half


def test_the_interval_is_wilsons_score_interval():
    assert binomial_interval(265 / 300, 300) == pytest.approx(_wilson(265, 300), abs=1e-12)
    assert binomial_interval(0.5, 12) == pytest.approx(_wilson(6, 12), abs=1e-12)
    low, high = binomial_interval(0.0, 10)
    assert low == pytest.approx(0.0, abs=1e-15) and high == pytest.approx(Z**2 / (10 + Z**2))
    assert binomial_interval(1.0, 10)[1] == pytest.approx(1.0)


def test_a_value_that_is_not_a_count_over_n_gets_no_interval():
    assert binomial_interval(0.5, 3) is None  # 1.5 successes
    assert binomial_interval(0.5, 0) is None
    assert binomial_interval(0.5, float("nan")) is None
    assert binomial_interval(1.2, 10) is None


def test_the_json_report_gives_each_checkpoints_declared_proportions_an_interval():
    rows = []
    for i in range(10):
        cp = f"m{i}"
        k = 200 + 7 * i
        rows += [
            (cp, "accuracy", "top1", k / 300, 300),
            (cp, "shape_bias", "shape_bias", (i + 1) / 12, 12),  # declared a proportion
            (cp, "ood", "robustness", 0.1 + 0.03 * i, 500),  # a mean of sets: not declared
            (cp, "ood", "id", 0.5 + 0.01 * i, 300),
        ]
    frame = pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value", "n"])
    doc = json.loads(biasbench.report(frame, resamples=100, predict=False).to_json())
    got = doc["score_intervals"]
    assert set(got) == {f"m{i}" for i in range(10)}
    assert set(got["m3"]) == {"accuracy.top1", "shape_bias.shape_bias"}
    a = got["m3"]["accuracy.top1"]
    assert (a["low"], a["high"]) == pytest.approx(_wilson(221, 300), abs=1e-12) and a["n"] == 300
    s = got["m0"]["shape_bias.shape_bias"]
    assert (s["low"], s["high"]) == pytest.approx(_wilson(1, 12), abs=1e-12) and s["n"] == 12
    assert doc["score_interval_method"].startswith("Wilson score interval, 95 %")
    # without stored counts (a table with no n): no intervals
    bare = biasbench.report(frame.drop(columns="n"), resamples=100, predict=False)
    assert json.loads(bare.to_json())["score_intervals"] == {}
