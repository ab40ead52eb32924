"""Confidence intervals shared by metrics and reports: one seeded bootstrap, through scipy.

``bootstrap_ci`` resamples the items (images for a metric, checkpoints for a report) with
replacement and returns the two-sided percentile interval of ``statistic`` (scipy.stats.bootstrap,
``method="percentile"``: BCa is unstable for medians of small, tied samples). Seeded, so the same
values give the same interval on every machine. Fewer than two finite values give ``(nan, nan)``;
constant values give the degenerate interval ``(v, v)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., float] = np.median,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """The ``confidence`` percentile-bootstrap interval of ``statistic`` over the finite ``values``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float("nan"), float("nan"))
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))

    def stat(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(sample, axis=axis)

    res = stats.bootstrap(
        (x,),
        stat,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
        vectorized=True,
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))
