"""Correlations between stored scalars across checkpoints (Gavrikov & Keuper 2024, "Can Biases in
ImageNet Models Explain Generalization?": Spearman rank correlation across a model zoo).

``score_matrix`` pivots the newest results into one row per checkpoint and one column per
``metric.key``; ``pairwise_spearman`` computes Spearman's ρ with its two-sided p-value
(``scipy.stats.spearmanr``) for every pair of columns, over the checkpoints that have both values.
Columns that are constant across checkpoints carry no rank information and are left out.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd
from scipy import stats


def score_matrix(results: pd.DataFrame) -> pd.DataFrame:
    """Checkpoints × ``metric.key`` matrix from a results frame (columns checkpoint, metric, key, value)."""
    if results.empty:
        return pd.DataFrame()
    df = results.assign(column=results["metric"] + "." + results["key"])
    return df.pivot_table(index="checkpoint", columns="column", values="value", aggfunc="last").sort_index(
        axis=1
    )


def pairwise_spearman(matrix: pd.DataFrame, columns: list[str] | None = None, min_n: int = 3) -> pd.DataFrame:
    """Long table ``x, y, rho, p, n`` for every pair of (non-constant) columns, sorted by |ρ|."""
    cols = [c for c in (columns or list(matrix.columns)) if c in matrix.columns]
    cols = [c for c in cols if matrix[c].dropna().nunique() > 1]
    rows = []
    for x, y in itertools.combinations(cols, 2):
        pair = matrix[[x, y]].dropna()
        if len(pair) < min_n or pair[x].nunique() < 2 or pair[y].nunique() < 2:
            continue
        res = stats.spearmanr(pair[x], pair[y])
        rho, p = float(res.statistic), float(res.pvalue)
        if math.isnan(rho):
            continue
        rows.append({"x": x, "y": y, "rho": rho, "p": p, "n": len(pair)})
    out = pd.DataFrame(rows, columns=["x", "y", "rho", "p", "n"])
    if len(out):
        out = out.reindex(out["rho"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    return out


def correlation_square(matrix: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Square Spearman matrix over ``columns`` (pairwise-complete), for heatmaps."""
    sub = matrix[[c for c in columns if c in matrix.columns]]
    return sub.corr(method="spearman", min_periods=3)
