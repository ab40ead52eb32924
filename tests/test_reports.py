"""Correlation report: Spearman ρ and p equal scipy's on known data; constant keys are skipped."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from biasbench.reports.correlations import pairwise_spearman, score_matrix
from biasbench.reports.render import heatmap, markdown_report


def _results() -> pd.DataFrame:
    rows = []
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    b = [1.0, 3.0, 2.0, 5.0, 4.0]
    for i in range(5):
        rows += [
            {"checkpoint": f"c{i}", "metric": "m1", "key": "a", "value": a[i]},
            {"checkpoint": f"c{i}", "metric": "m2", "key": "b", "value": b[i]},
            {"checkpoint": f"c{i}", "metric": "m2", "key": "neg", "value": -a[i]},
            {"checkpoint": f"c{i}", "metric": "m3", "key": "const", "value": 1.0},
        ]
    return pd.DataFrame(rows)


def test_spearman_matches_scipy_and_orders_by_strength():
    m = score_matrix(_results())
    corr = pairwise_spearman(m)
    top = corr.iloc[0]
    assert {top.x, top.y} == {"m1.a", "m2.neg"} and top.rho == pytest.approx(-1.0)
    row = corr[(corr.x == "m1.a") & (corr.y == "m2.b")].iloc[0]
    ref = stats.spearmanr([0.1, 0.2, 0.3, 0.4, 0.5], [1, 3, 2, 5, 4])
    assert row.rho == pytest.approx(ref.statistic) and row.p == pytest.approx(ref.pvalue)
    assert "m3.const" not in set(corr.x) | set(corr.y)


def test_markdown_report_lists_scores_and_correlations(tmp_path):
    text = markdown_report(_results())
    assert "## Spearman correlations" in text and "m1.a" in text and "| c4 |" in text
    png = heatmap(_results(), ["m1.a", "m2.b", "m2.neg"], tmp_path / "h.png")
    assert png.stat().st_size > 1000


def test_report_with_too_few_checkpoints_says_so():
    df = _results()
    assert "at least 3 checkpoints" in markdown_report(df[df.checkpoint.isin(["c0", "c1"])])


def test_across_metrics_report_drops_pairs_within_one_metric():
    text = markdown_report(_results(), across_metrics=True)
    corr_part = text.split("## Spearman correlations")[1]
    assert "| m2.b | m2.neg |" not in corr_part and "| m2.neg | m2.b |" not in corr_part
    assert "m1.a" in corr_part and "of different metrics" in corr_part
    assert "| m2.b" in markdown_report(_results()).split("## Spearman correlations")[1]
