"""The correction family (``--family``): which cells a p-value is corrected with.

* Holm within families is Holm applied to each family alone (hand-computed);
* with the default family (every cell of the table), one more metric's keys change an unrelated
  cell's adjusted p; with the family fixed to the study's keys, they do not — the cell's adjusted p
  is bit-identical;
* per generalization axis, each column's cells are corrected among themselves (scipy/statsmodels'
  Holm on that column alone);
* the page, the legend, the JSON and the verdict state the family; an unknown rule or key is one
  clear error.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

import biasbench
from biasbench.reports import statistics as st
from tests.harness_fixtures import bench

N = 14
STUDY = ["shape_bias.shape_bias", "spectral.LPP", "ood.robustness", "ood.concepts"]


def _frame(extra: bool) -> pd.DataFrame:
    """Two biases, two generalization axes and ID accuracy over ``N`` checkpoints; ``extra`` adds an
    unrelated metric's three bias keys (critical_band's), which join the curated table as rows."""
    rng = np.random.default_rng(5)
    sb, lpp = rng.uniform(0, 1, N), rng.uniform(0, 1, N)
    cols = {
        ("shape_bias", "shape_bias"): sb,
        ("spectral", "LPP"): lpp,
        ("ood", "robustness"): sb + 0.4 * rng.normal(size=N),
        ("ood", "concepts"): lpp + 0.6 * rng.normal(size=N),
        ("ood", "id"): rng.uniform(0.5, 0.9, N),
    }
    if extra:
        for key in ("bandwidth_norm", "centre_frequency_norm", "peak_noise_sensitivity_norm"):
            cols[("critical_band", key)] = rng.uniform(0, 1, N)
    rows = [(f"m{i:02d}", m, k, float(v[i])) for (m, k), v in cols.items() for i in range(N)]
    return pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value"])


def _p_adj(rep: biasbench.Report, x: str, y: str) -> float:
    return float(rep.table.set_index(["x", "y"]).loc[(x, y), "p_adj"])


def test_holm_within_families_is_holm_on_each_family_alone():
    p = [0.01, 0.04, 0.03, 0.02]
    # family a: 0.01·2 = 0.02, max(0.02, 0.04·1) = 0.04; family b: 0.02·2 = 0.04, max(0.04, 0.03) = 0.04
    np.testing.assert_allclose(st.adjust(p, "holm", ["a", "a", "b", "b"]), [0.02, 0.04, 0.04, 0.04])
    # one family: 0.01·4, 0.02·3, 0.03·2, 0.04·1 → monotone 0.04, 0.06, 0.06, 0.06
    np.testing.assert_allclose(st.adjust(p, "holm"), [0.04, 0.06, 0.06, 0.06])
    assert np.isnan(st.adjust([0.01, float("nan")], "holm", ["a", "a"])[1])


def test_a_fixed_family_keeps_a_cells_adjusted_p_when_an_unrelated_metric_is_added():
    cell = ("shape_bias.shape_bias", "ood.robustness")
    base = biasbench.report(_frame(False), resamples=100, predict=False)
    more = biasbench.report(_frame(True), resamples=100, predict=False)
    assert more.tested > base.tested  # the new metric's bias rows joined the table
    assert _p_adj(more, *cell) > _p_adj(base, *cell)  # default family: the new cells cost this one power
    fixed = [
        biasbench.report(f, resamples=100, predict=False, family=STUDY) for f in (_frame(False), _frame(True))
    ]
    assert _p_adj(fixed[0], *cell) == _p_adj(fixed[1], *cell)
    # the fixed family is the study's 2 × 2 cells, corrected among themselves
    t = fixed[1].table
    inside = t[t.family == "fixed"]
    assert len(inside) == 4 and set(inside.x) == {"shape_bias.shape_bias", "spectral.LPP"}
    np.testing.assert_allclose(inside.p_adj, multipletests(inside.p, method="holm")[1])
    rest = t[t.family == "rest"]
    np.testing.assert_allclose(rest.p_adj, multipletests(rest.p, method="holm")[1])


def test_one_family_per_generalization_axis_corrects_each_column_alone():
    rep = biasbench.report(_frame(True), resamples=100, predict=False, family="column")
    for y, grp in rep.table.groupby("y"):
        assert set(grp.family) == {f"column {y}"}
        np.testing.assert_allclose(grp.p_adj, multipletests(grp.p, method="holm")[1])
    assert rep.family_sizes() == {f"column {y}": 5 for y in rep.cols}
    by_row = biasbench.report(_frame(True), resamples=100, predict=False, family="row")
    assert set(by_row.table.family) == {f"row {x}" for x in by_row.rows}


def test_every_output_states_the_family_and_bad_families_are_one_error():
    rep = biasbench.report(_frame(True), resamples=100, predict=False, family=STUDY)
    text = "the 4 cells among " + ", ".join(STUDY) + "; the other 11 cells are a second family"
    assert text in rep.to_markdown() and text in rep.to_html() and text in rep.verdict()[0]
    doc = json.loads(rep.to_json())
    assert doc["family"] == STUDY and doc["families"] == {"fixed": 4, "rest": 11}
    assert {p["family"] for p in doc["pairs"]} == {"fixed", "rest"}
    default = biasbench.report(_frame(False), resamples=100, predict=False)
    assert "one family, every cell of the table (6 cells)" in default.to_markdown()
    with pytest.raises(biasbench.BiasbenchError, match="unknown correction family 'cells'"):
        biasbench.report(_frame(False), family="cells")
    with pytest.raises(biasbench.BiasbenchError, match="unknown key 'ood.robustnes'"):
        biasbench.report(_frame(False), family=["ood.robustnes"])


def test_bench_report_family_on_a_database(tmp_path):
    frame = _frame(True)
    wide = frame.assign(col=frame.metric + "." + frame.key).pivot(
        index="checkpoint", columns="col", values="value"
    )
    csv, mapping, db = tmp_path / "t.csv", tmp_path / "m.toml", tmp_path / "b.duckdb"
    wide.reset_index().to_csv(csv, index=False)
    mapping.write_text(
        'checkpoint = "checkpoint"\n[keys]\n' + "".join(f'"{c}" = "{c}"\n' for c in wide.columns),
        encoding="utf-8",
    )
    r = bench(["import", str(csv), "--mapping", str(mapping), "--source", "t", "--db", str(db)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    args = ["report", "--db", str(db), "--resamples", "100", "--no-predict", "-f", "json"]
    r = bench([*args, "--family", ",".join(STUDY)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["families"] == {"fixed": 4, "rest": 11}
    r = bench([*args, "--family", "column"], tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["family"] == "column"
    r = bench([*args, "--family", "everything"], tmp_path)
    assert r.returncode == 2 and "unknown correction family 'everything'" in r.stderr
