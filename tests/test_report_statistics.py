"""The report's statistics against answers derived by hand or by an independent route: Spearman ρ and
Kendall τ on a constructed table, the partial correlation against the residual method, bootstrap
intervals that contain the estimate and narrow with n, Holm / BH on known p-values, and a
leave-one-category-out range that exposes a correlation carried by one category."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from biasbench.reports import statistics as st

# ranks differ by d = (-1, 1, -1, 1, 0): Σd² = 4, ρ = 1 - 6·4 / (5·(25 - 1)) = 0.8;
# of the 10 pairs, (1,2) and (3,4) are discordant: τ = (8 - 2) / 10 = 0.6
X = [1.0, 2.0, 3.0, 4.0, 5.0]
Y = [2.0, 1.0, 4.0, 3.0, 5.0]


def test_spearman_kendall_and_pearson_equal_the_hand_computed_values():
    assert st.correlation(X, Y, "spearman")[0] == pytest.approx(0.8)
    assert st.correlation(X, Y, "kendall")[0] == pytest.approx(0.6)
    assert st.correlation(X, Y, "pearson")[0] == pytest.approx(0.8)  # the values are their own ranks
    # a monotone but non-linear transform changes Pearson's r and leaves ρ and τ alone
    y3 = [v**3 for v in Y]
    assert st.correlation(X, y3, "spearman")[0] == pytest.approx(0.8)
    assert st.correlation(X, y3, "kendall")[0] == pytest.approx(0.6)
    assert st.correlation(X, y3, "pearson")[0] != pytest.approx(0.8, abs=1e-3)


def test_the_table_holds_the_hand_computed_rho_with_n_per_cell_and_missing_values_dropped():
    values = pd.DataFrame({"b": [*X, 9.0], "g": [*Y, np.nan]}, index=[f"c{i}" for i in range(6)])
    t = st.correlation_table(values, [("b", "g")], options=st.Options(n_resamples=500))
    row = t.iloc[0]
    assert row.r == pytest.approx(0.8) and row.n == 5
    assert row.p == pytest.approx(stats.spearmanr(X, Y).pvalue)


def test_a_constant_variable_or_too_few_checkpoints_leave_the_cell_undefined():
    assert all(math.isnan(v) for v in st.correlation([1, 2, 3], [4, 4, 4]))
    assert all(math.isnan(v) for v in st.correlation([1, 2], [3, 4]))
    assert math.isnan(st.bootstrap_ci([1, 2, 3], [3, 1, 2])[0])  # n = 3: no interval


def _residual_partial(x, y, z):
    """Partial Spearman by the residual method: rank all three, regress the ranks of x and of y on
    the ranks of z (least squares with intercept), correlate the residuals (Pearson)."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones_like(rz), rz])
    res_x = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    res_y = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    return stats.pearsonr(res_x, res_y).statistic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_spearman_equals_the_residual_method(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=15)
    x = z + rng.normal(size=15)
    y = z + 0.5 * x + rng.normal(size=15)
    r, p = st.partial_spearman(x, y, z)
    assert r == pytest.approx(_residual_partial(x, y, z), abs=1e-12)
    t = r * math.sqrt((15 - 3) / (1 - r**2))  # one covariate: n - 3 degrees of freedom
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 12))


def test_partial_correlation_removes_what_the_covariate_explains():
    rng = np.random.default_rng(3)
    acc = rng.uniform(size=40)
    bias = acc + 0.05 * rng.normal(size=40)  # a "bias" that is accuracy in disguise
    gen = acc + 0.05 * rng.normal(size=40)
    assert st.correlation(bias, gen)[0] > 0.8
    assert abs(st.partial_spearman(bias, gen, acc)[0]) < 0.35


def test_bootstrap_interval_contains_the_estimate_and_narrows_as_n_grows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 40, 160):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        r = st.correlation(x, y)[0]
        lo, hi, undefined = st.bootstrap_ci(x, y, n_resamples=1000)
        assert lo <= r <= hi and undefined == 0
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_interval_is_seeded_and_paired():
    x, y = list(range(12)), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10]
    assert st.bootstrap_ci(x, y, seed=4) == st.bootstrap_ci(x, y, seed=4)
    # paired resampling keeps each checkpoint's two values together: an exact monotone relation
    # stays ρ = 1 in every resample, so the interval is [1, 1]
    lo, hi, _ = st.bootstrap_ci(x, [2 * v for v in x], n_resamples=200)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_holm_and_benjamini_hochberg_on_known_p_values():
    # Holm: sorted 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06
    assert st.adjust([0.01, 0.04, 0.03, np.nan], "holm")[:3] == pytest.approx([0.03, 0.06, 0.06])
    # BH: 0.04·3/3 = 0.04, min(0.03·3/2, 0.04) = 0.04, 0.01·3/1 = 0.03
    assert st.adjust([0.01, 0.04, 0.03], "bh") == pytest.approx([0.03, 0.04, 0.04])
    assert st.adjust([0.01, 0.04], "none") == pytest.approx([0.01, 0.04])


def test_leave_one_category_out_exposes_a_correlation_carried_by_one_category():
    # five "a" checkpoints anti-correlated among themselves, three "b" far up and to the right:
    # overall ρ = 1 - 6·40 / (8·63) = 0.524 (ranks differ by -4, -2, 0, 2, 4, 0, 0, 0);
    # without "b": ρ = -1; without "a": ρ = +1
    x = [1, 2, 3, 4, 5, 10, 11, 12]
    y = [5, 4, 3, 2, 1, 10, 11, 12]
    cats = ["a"] * 5 + ["b"] * 3
    assert st.correlation(x, y)[0] == pytest.approx(1 - 240 / 504)
    lo, hi, drop = st.leave_one_category_out(x, y, cats)
    assert (lo, hi) == (pytest.approx(-1.0), pytest.approx(1.0))
    assert drop == "b"  # leaving "b" out moves ρ most (0.52 → -1)
    assert all(math.isnan(v) for v in st.leave_one_category_out(x, y, ["a"] * 8)[:2])


def test_correction_runs_over_the_whole_table():
    rng = np.random.default_rng(5)
    values = pd.DataFrame(rng.normal(size=(12, 4)), columns=["b1", "b2", "g1", "g2"])
    pairs = st.grid_pairs(["b1", "b2"], ["g1", "g2"])
    t = st.correlation_table(values, pairs, options=st.Options(n_resamples=200))
    assert list(t.p_adj) == pytest.approx(list(st.adjust(t.p.to_numpy(), "holm")))
    assert (t.p_adj >= t.p - 1e-15).all()


def test_the_bootstraps_counting_ranks_are_scipys_average_ranks_exactly():
    import numpy as np
    from scipy import stats as sps

    from biasbench.reports.statistics import _average_ranks

    codes = np.random.default_rng(1).integers(0, 6, (4, 30, 25)).astype(float)  # many ties
    for axis in (-1, 1, 0):
        assert np.array_equal(_average_ranks(codes, axis), sps.rankdata(codes, axis=axis))
