"""The report's companions and paper-ready outputs: the bias × bias and generalization × generalization
matrices carry the same statistics as ``--among``; the critical-band axis is labelled with the band
centres of the image size that was measured (1.75·2^f at 224 px, 2·2^f at 32 px); study-style scatter
plots size their markers by a numeric tag; figures come as PNG, SVG and PDF; the LaTeX table is a
booktabs table whose cells are the report's coefficients; a label space's caveat reaches the page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import biasbench
from biasbench.harness.store import JobKey, JobRecord, Store
from biasbench.metrics.critical_band import band_tick
from biasbench.reports import figures
from tests.harness_fixtures import bench


def _frame(n: int = 10) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(5)
    rows = []
    tags = {}
    for i in range(n):
        cp = f"c{i}"
        tags[cp] = {"category": "ab"[i % 2], "eps": str([0, 1, 4][i % 3]), "name": f"x{i}"}
        for metric, key in [
            ("shape_bias", "shape_bias"),
            ("spectral", "LPP"),
            ("spectral", "HPP"),
            ("ood", "id"),
            ("ood", "robustness"),
            ("ood", "concepts"),
        ]:
            rows.append((cp, metric, key, float(rng.uniform())))
    return pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value"]), tags


def test_the_role_matrices_are_the_among_reports():
    frame, tags = _frame()
    rep = biasbench.report(frame, tags=tags, resamples=200, permutations=100)
    assert set(rep.matrices) == {"bias", "generalization"}
    among = biasbench.report(frame, tags=tags, resamples=200, among="bias")
    pd.testing.assert_frame_equal(rep.matrices["bias"].table, among.table)
    assert len(among.table) == 3  # shape bias, LPP, HPP: three unordered pairs
    doc = json.loads(rep.to_json())
    assert len(doc["matrices"]["generalization"]) == 3
    assert "## Bias × bias" in rep.to_markdown()


def test_the_band_axis_is_labelled_with_the_measured_sizes_band_centres():
    # centre_frequency = f0 · 2^mu: f0 = 1.75 at 224 px (7 bands), 2 at 32 px (4 bands)
    at224 = pd.DataFrame({"centre_frequency_norm": [1.75 * 2**2.3, 1.75 * 2**1.1], "fit_mu_norm": [2.3, 1.1]})
    assert [band_tick(f, at224) for f in (0, 3, 6)] == ["0\n1.75", "3\n14", "6\n112"]
    at32 = pd.DataFrame({"centre_frequency_norm": [2 * 2**0.7], "fit_mu_norm": [0.7]})
    assert [band_tick(f, at32) for f in range(4)] == ["0\n2", "1\n4", "2\n8", "3\n16"]
    assert band_tick(2, pd.concat([at224, at32])) == "2"  # two image sizes: the band alone
    assert band_tick(2, pd.DataFrame({"threshold_norm@f2": [3.0]})) == "2"  # no fit stored


def test_marker_sizes_follow_a_numeric_tag_and_a_text_tag_is_refused():
    frame, tags = _frame()
    rep = biasbench.report(frame, tags=tags, resamples=200, permutations=100)
    sizes = figures.marker_sizes(rep, "eps")
    assert sizes["c0"] == 16.0 and sizes["c2"] == 140.0  # eps 0 and 4: the ends of the range
    assert sizes["c1"] == pytest.approx(16.0 + 124.0 / 4)  # eps 1: a quarter of the way
    assert (figures.marker_sizes(rep, None) == 24.0).all()
    with pytest.raises(biasbench.BiasbenchError, match="not a number for every checkpoint"):
        figures.marker_sizes(rep, "name")
    fig = figures.study_scatter(rep, "shape_bias.shape_bias", "category", "eps")
    assert len(fig.axes) == 3  # one panel per generalization axis
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {f"c{i}" for i in range(10)}  # every checkpoint labelled on the static figure


def test_figures_are_written_in_every_asked_format(tmp_path):
    frame, tags = _frame()
    rep = biasbench.report(frame, tags=tags, resamples=200, permutations=100)
    written = figures.write_all(rep, tmp_path, "category", "eps", formats=("png", "svg", "pdf"))
    stems = {p.stem for p in written}
    assert {"heatmap", "scatter", "heatmap_bias", "heatmap_generalization", "study_00"} <= stems
    for p in written:
        head = p.read_bytes()[:8]
        assert {
            "png": head.startswith(b"\x89PNG"),
            "pdf": head.startswith(b"%PDF"),
            "svg": b"<svg" in p.read_bytes()[:2000],
        }[p.suffix[1:]], p
    with pytest.raises(biasbench.BiasbenchError, match="unknown figure format gif"):
        figures.write_all(rep, tmp_path, formats=("gif",))


def test_the_latex_table_is_booktabs_with_the_reports_coefficients():
    frame, tags = _frame()
    rep = biasbench.report(frame, tags=tags, resamples=200, permutations=100)
    tex = rep.to_latex()
    assert tex.startswith("\\begin{table}") and "\\toprule" in tex and "\\bottomrule" in tex
    row = next(line for line in tex.splitlines() if line.startswith("shape bias &"))
    cells = rep.table.set_index(["x", "y"])
    for col in rep.cols:
        assert f"${cells.loc[('shape_bias.shape_bias', col), 'r']:+.2f}$" in row
    assert row.count("&") == len(rep.cols)
    assert "\\rho" in tex and "ρ" not in tex and "_" not in tex.replace("\\_", "")


def test_a_label_spaces_caveat_reaches_the_verdict_and_the_legend(tmp_path):
    db = tmp_path / "d.duckdb"
    with Store(db) as s:
        run = s.start_run(argv=["bench"], git_sha="x", versions={}, device="cpu")
        for i in range(4):
            s.upsert_checkpoint({"id": f"z{i}", "arch": "zoo:resnet50-w8", "labels": "demo-world"})
            for metric, scalars in {
                "shape_bias": {"shape_bias": 0.1 * i},
                "ood": {"id": 0.9 - 0.1 * i, "concepts": 0.2 * i + 0.05 * (i % 2)},
            }.items():
                s.write_job(
                    JobKey(f"z{i}", metric, f"h{i}"),
                    JobRecord(metric_version="1", scalars=scalars, n=dict.fromkeys(scalars, 9), run_id=run),
                )
        s.finish_run(run, "ok")
    rep = biasbench.report(db, resamples=200)
    assert any(
        c.startswith("ood.concepts: on the demo world, concepts is the mean accuracy on its edges")
        for c in rep.caveats
    )
    assert rep.caveats[0] in rep.verdict() and rep.caveats[0] in rep.to_markdown()
    r = bench(["report", "--db", str(db), "--resamples", "200", "-f", "latex"], tmp_path)
    assert r.returncode == 0 and "\\begin{tabular}" in r.stdout
