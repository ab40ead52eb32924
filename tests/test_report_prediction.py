"""All biases together, subgroups and the verdict: known answers.

* a generalization column that is an exact linear function of two biases is predicted out of sample
  (R² ≈ 1, permutation p at its floor 1/1001); a column of noise is not (R² ≤ 0, p not small);
* the permutations' closed-form predictions are scikit-learn's ``RidgeCV`` predictions (checked on
  the observed and on random targets), and R² is scikit-learn's ``r2_score``;
* ID + biases gains over ID alone exactly when the biases carry what ID accuracy does not;
* ``--by`` groups partition the checkpoints, and each group's coefficient is scipy's on that group;
* the verdict's sentences follow its rules from the numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import r2_score

import biasbench
from biasbench.reports import prediction as pr
from tests.harness_fixtures import bench

N = 30
BIASES = ["shape_bias.shape_bias", "spectral.LPP", "spectral.HPP", "sis.sis_frac_median"]


def _world(
    seed: int = 0, n: int = N
) -> tuple[pd.DataFrame, dict[str, dict[str, str]], dict[str, np.ndarray]]:
    """A long results table: four biases, ID accuracy, and generalization axes built from them."""
    rng = np.random.default_rng(seed)
    b = {k: rng.uniform(0, 1, n) for k in BIASES}
    idacc = rng.uniform(0.5, 0.9, n)
    axes = {
        "robustness": 2.0 * b[BIASES[0]] - 3.0 * b[BIASES[1]],  # exactly linear in two biases
        "concepts": np.random.default_rng(seed + 100).normal(size=n),  # noise
        "adversarial": idacc.copy(),  # ID accuracy itself: the biases add nothing
        "id": idacc,
    }
    rows = []
    for i in range(n):
        cp = f"m{i:02d}"
        for k in BIASES:
            metric, key = k.split(".")
            rows.append((cp, metric, key, float(b[k][i])))
        for key, v in axes.items():
            rows.append((cp, "ood", key, float(v[i])))
    frame = pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value"])
    tags = {
        f"m{i:02d}": {"category": "adversarial" if i % 3 == 0 else ("plain" if i % 3 == 1 else "stylized")}
        for i in range(n)
    }
    return frame, tags, {**b, **axes}


def _pred(rep: biasbench.Report, y: str, model: str) -> pd.Series:
    t = rep.prediction
    return t[(t.y == y) & (t.model == model)].iloc[0]


def test_the_permutations_closed_form_is_scikit_learns_ridge_cv_prediction():
    rng = np.random.default_rng(3)
    for n, p in [(12, 2), (48, 7), (31, 12)]:  # incl. more features than a fold's rows allow OLS
        X = rng.normal(size=(n, p))
        folds = pr._folds(n, pr.FOLDS, 0)
        Y = np.column_stack([X @ rng.normal(size=p) + rng.normal(size=n) for _ in range(4)])
        closed = pr.permuted_predictions(X, Y, folds)
        for j in range(Y.shape[1]):
            np.testing.assert_allclose(closed[:, j], pr.cv_predict(X, Y[:, j], folds), atol=1e-8)
            assert pr.r2(Y[:, j], closed[:, j]) == pytest.approx(r2_score(Y[:, j], closed[:, j]))


def test_an_exact_linear_function_of_two_biases_is_predicted_and_noise_is_not():
    frame, tags, _ = _world()
    rep = biasbench.report(frame, tags=tags, resamples=300)
    exact = _pred(rep, "ood.robustness", "biases")
    assert exact.r2 > 0.99 and exact.n == N
    assert exact.p_perm == pytest.approx(1 / 1001)  # the permutation floor
    assert exact.r2_low <= exact.r2 <= exact.r2_high
    noise = _pred(rep, "ood.concepts", "biases")
    assert noise.r2 <= 0 and noise.p_perm > 0.2


def test_adding_the_biases_gains_over_id_accuracy_only_when_they_carry_more():
    frame, tags, _ = _world()
    rep = biasbench.report(frame, tags=tags, resamples=300)
    # robustness is made of biases, not of ID accuracy: ID alone fails, ID + biases succeeds
    base, both = _pred(rep, "ood.robustness", "id"), _pred(rep, "ood.robustness", "id+biases")
    assert base.r2 < 0.1 and both.r2 > 0.99
    assert both.gain == pytest.approx(both.r2 - base.r2) and both.gain_low > 0.8
    # adversarial is ID accuracy itself: ID alone is (nearly) perfect and the biases add nothing
    base, both = _pred(rep, "ood.adversarial", "id"), _pred(rep, "ood.adversarial", "id+biases")
    assert base.r2 > 0.999 and abs(both.gain) < 0.01 and both.gain_low <= 0.0 + 1e-9
    # the control's own axis is predicted from the biases only (no ID-on-ID row)
    assert set(rep.prediction[rep.prediction.y == "ood.id"].model) == {"biases"}


def test_the_gains_permutation_p_is_at_its_floor_for_biases_and_not_small_for_id_accuracy_itself():
    frame, tags, _ = _world()
    rep = biasbench.report(frame, tags=tags, resamples=200)
    # robustness is made of biases independent of ID accuracy: no permuted residual reaches its ΔR²
    assert _pred(rep, "ood.robustness", "id+biases").p_gain == pytest.approx(1 / 1001)
    # adversarial is ID accuracy exactly: ΔR² ≈ 0, and every permutation reaches it (p = 1)
    both = _pred(rep, "ood.adversarial", "id+biases")
    assert abs(both.gain) < 0.01 and both.p_gain > 0.5
    # only the id+biases row carries a gain and its p
    assert rep.prediction[rep.prediction.model != "id+biases"].p_gain.isna().all()


def test_the_gains_permutation_p_is_not_small_when_y_is_id_accuracy_plus_independent_noise():
    # the null itself, not a degenerate case: y = ID + noise that no bias carries; over ten seeds the
    # p-values are not concentrated near 0 (a valid test rejects about 5 % of the time at 0.05)
    ps = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n = 30
        idacc = rng.uniform(0.5, 0.9, n)
        biases = rng.uniform(0, 1, (n, 3))
        y = idacc + 0.05 * rng.normal(size=n)
        data = pd.DataFrame(biases, columns=["b0", "b1", "b2"]).assign(id=idacc, y=y)
        rows = pr.predict_axis(
            data, "y", ["b0", "b1", "b2"], "id", pr.PredictionOptions(permutations=300, n_resamples=200)
        )
        ps.append(next(r for r in rows if r["model"] == "id+biases")["p_gain"])
    assert sum(p < 0.05 for p in ps) <= 2 and np.median(ps) > 0.2


def test_the_gains_permutation_p_follows_its_seed_and_its_count():
    _, _, v = _world()
    data = pd.DataFrame(
        {k: v[k.split(".")[-1]] if k.startswith("ood") else v[k] for k in [*BIASES, "ood.id"]}
    )
    data["y"] = v["robustness"]
    opts = pr.PredictionOptions(permutations=200, n_resamples=200)
    a, b = (pr.predict_axis(data, "y", BIASES, "ood.id", opts)[-1] for _ in range(2))
    assert a["model"] == "id+biases" and a["p_gain"] == b["p_gain"] == pytest.approx(1 / 201)
    none = pr.predict_axis(data, "y", BIASES, "ood.id", pr.PredictionOptions(permutations=0, n_resamples=200))
    assert np.isnan(none[-1]["p_gain"]) and np.isnan(none[-1]["p_perm"]) and none[-1]["gain"] == a["gain"]


def test_too_few_checkpoints_leave_the_prediction_undefined():
    frame, tags, _ = _world(n=pr.MIN_N - 1)
    rep = biasbench.report(frame, tags=tags, resamples=200)
    assert rep.prediction["r2"].isna().all()
    assert any("too few complete checkpoints" in s for s in rep.verdict())


def test_groups_partition_the_checkpoints_and_each_groups_coefficient_is_scipys():
    frame, tags, v = _world()
    rep = biasbench.report(frame, tags=tags, resamples=200, by="category=adversarial")
    assert list(rep.groups) == ["category=adversarial", "rest"]
    at, rest = rep.groups["category=adversarial"], rep.groups["rest"]
    assert at.n_checkpoints == 10 and rest.n_checkpoints == 20
    assert sorted(at.scores.checkpoints + rest.scores.checkpoints) == sorted(rep.scores.checkpoints)
    idx = np.arange(N) % 3 == 0
    cell = at.table.set_index(["x", "y"]).loc[(BIASES[0], "ood.robustness")]
    expected = stats.spearmanr(v[BIASES[0]][idx], v["robustness"][idx]).statistic
    assert cell.r == pytest.approx(expected) and cell.n == 10
    each = biasbench.report(frame, tags=tags, resamples=200, by="category")
    assert list(each.groups) == ["category=adversarial", "category=plain", "category=stylized"]
    with pytest.raises(biasbench.BiasbenchError, match="values: adversarial, plain, stylized"):
        biasbench.report(frame, tags=tags, by="category=robust")
    with pytest.raises(biasbench.BiasbenchError, match="no checkpoint carries the tag 'eps'"):
        biasbench.report(frame, tags=tags, by="eps")


def test_the_verdict_says_when_the_table_shows_only_the_strongest_cells():
    frame, tags, _ = _world()
    rep = biasbench.report(frame, tags=tags, resamples=100, top=3, permutations=0)
    assert len(rep.table) == 3 and rep.tested > 3
    line = rep.verdict()[1]
    assert (
        f"of 3 survive correction (adjusted p < 0.05; the table shows the 3 strongest of the {rep.tested})"
        in line
    )
    full = biasbench.report(frame, tags=tags, resamples=100, permutations=0)
    assert "the table shows the" not in full.verdict()[1]  # every tested cell is shown


def test_the_verdict_states_the_surviving_cells_the_prediction_and_the_caveats():
    frame, tags, _ = _world()
    rep = biasbench.report(frame, tags=tags, resamples=300, by="category=adversarial")
    said = rep.verdict()
    assert said[0].startswith(f"{N} checkpoints, {rep.tested} bias × generalization cells tested")
    sig = rep.table[rep.table.p_adj < 0.05]
    assert f"{len(sig)} of {rep.table.r.notna().sum()} survive correction" in said[1]
    robust = next(s for s in said if s.startswith(rep.label("ood.robustness") + ":"))
    assert "the biases together predict it" in robust and "beyond ID accuracy alone" in robust
    assert "permutation p = 0.001)" in robust  # ΔR²'s own p, at its floor 1/1001
    concepts = next(s for s in said if s.startswith(rep.label("ood.concepts") + ":"))
    assert "do not predict" in concepts
    assert any(s.startswith("Group rest (n = 20)") for s in said)
    assert "not causation" in said[-1] or any("not causation" in s for s in said)


def test_noise_everywhere_gives_a_verdict_of_no_surviving_cell():
    rng = np.random.default_rng(7)
    rows = [
        (f"m{i}", m, k, float(rng.normal()))
        for i in range(12)
        for m, k in [("shape_bias", "shape_bias"), ("ood", "robustness"), ("ood", "id")]
    ]
    rep = biasbench.report(
        pd.DataFrame(rows, columns=["checkpoint", "metric", "key", "value"]), resamples=200
    )
    said = rep.verdict()
    assert any(s.startswith("No cell survives correction") for s in said)
    assert any("fewer than 20" in s for s in said)


def test_every_format_carries_the_verdict_the_r2_table_and_the_groups(tmp_path):
    frame, tags, _ = _world()
    rep = biasbench.report(frame, tags=tags, resamples=200, permutations=200, by="category=adversarial")
    md, page = rep.to_markdown(), rep.to_html()  # the page draws its figures: render it once
    assert "## Verdict" in md and "## All biases together" in md and "## By group" in md
    assert "perm. p of Δ" in md and "perm. p of Δ" in page
    doc = json.loads(rep.to_json())
    robust = next(r for r in doc["prediction"] if r["y"] == "ood.robustness" and r["model"] == "id+biases")
    assert robust["p_gain"] == pytest.approx(1 / 201)
    assert doc["verdict"] == rep.verdict() and len(doc["prediction"]) == len(rep.prediction)
    assert set(doc["groups"]) == {"category=adversarial", "rest"}
    assert doc["scores"]["m00"]["shape_bias.shape_bias"] == pytest.approx(frame.value.iloc[0])
    csv = rep.to_csv()
    assert csv.splitlines()[0].startswith("group,") and "\nrest," in csv
    assert (
        "<h2>Verdict</h2>" in page and "<h2>All biases together</h2>" in page and "<h2>By group</h2>" in page
    )


def test_bench_report_by_and_no_predict_on_a_database(tmp_path):
    frame, tags, _ = _world(n=12)
    db = tmp_path / "b.duckdb"
    frame_csv = tmp_path / "t.csv"
    wide = frame.assign(col=frame.metric + "." + frame.key).pivot(
        index="checkpoint", columns="col", values="value"
    )
    wide["category"] = [tags[c]["category"] for c in wide.index]
    wide.reset_index().to_csv(frame_csv, index=False)
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        'checkpoint = "checkpoint"\ntags = ["category"]\n[keys]\n'
        + "".join(f'"{c}" = "{c}"\n' for c in wide.columns if c != "category"),
        encoding="utf-8",
    )
    r = bench(
        ["import", str(frame_csv), "--mapping", str(mapping), "--source", "t", "--db", str(db)], tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = bench(
        ["report", "--db", str(db), "--resamples", "200", "--permutations", "200", "--by", "category"],
        tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "Verdict\n" in r.stdout
        and "All biases together" in r.stdout
        and "By group (--by category)" in r.stdout
        and "perm. p of Δ" in r.stdout
    )
    r = bench(["report", "--db", str(db), "--resamples", "200", "--no-predict", "-f", "json"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["prediction"] == []
