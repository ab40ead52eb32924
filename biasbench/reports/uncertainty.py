"""Each checkpoint's own measurement uncertainty, where it is countable.

A key its metric declares a proportion (``KeyRole(proportion=True)``: an accuracy, shape bias) is a
count of successes ``k`` over the ``n`` trials stored with it (``k = value · n``). Its interval is the
Wilson score interval at ``CONFIDENCE`` (95 %; Wilson 1927), from ``scipy.stats.binomtest(k,
n).proportion_ci(method="wilson")``: the uncertainty of that one checkpoint's score from its finite
test set, not of the correlation across checkpoints. A value whose ``value · n`` is not a whole
number (within ``1e-6``), or without a positive ``n`` (an imported table's), is not countable and gets
no interval.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from biasbench.core.statistics import CONFIDENCE
from biasbench.reports.scores import Scores

METHOD = "wilson"
TOLERANCE = 1e-6


def binomial_interval(value: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson interval of a proportion ``value`` over ``n`` trials; None when not countable."""
    if not (n == n and n >= 1 and value == value and 0.0 <= value <= 1.0):
        return None
    k = value * n
    if abs(k - round(k)) > TOLERANCE * max(1.0, n):
        return None
    ci = stats.binomtest(int(round(k)), int(round(n))).proportion_ci(
        confidence_level=confidence, method=METHOD
    )
    return float(ci.low), float(ci.high)


def score_intervals(scores: Scores, confidence: float = CONFIDENCE) -> dict[str, dict[str, dict[str, float]]]:
    """Per checkpoint, per declared-proportion column: ``{"low", "high", "n"}`` (checkpoints and
    columns without a countable value left out)."""
    cols = scores.columns
    if not len(scores.counts.columns) or "proportion" not in cols:
        return {}
    chosen = [c for c in scores.values.columns if bool(cols.at[c, "proportion"])]
    out: dict[str, dict[str, dict[str, float]]] = {}
    cache: dict[tuple[float, float], tuple[float, float] | None] = {}
    for cp in scores.values.index:
        for c in chosen:
            value, n = scores.values.at[cp, c], scores.counts.at[cp, c]
            if pd.isna(value) or pd.isna(n):
                continue
            key = (float(value), float(n))
            if key not in cache:
                cache[key] = binomial_interval(*key, confidence)
            found = cache[key]
            if found is not None and not any(math.isnan(v) for v in found):
                out.setdefault(str(cp), {})[c] = {"low": found[0], "high": found[1], "n": int(round(n))}
    return out
