"""All biases together: how much of a generalization axis the bias vector predicts, out of sample.

For each generalization column ``y``, over the checkpoints that have ``y``, the control (ID accuracy)
and every bias (complete cases, ``n``), three predictors are compared:

* ``id``: the control alone (the baseline: is a bias only a proxy for accuracy?);
* ``biases``: the bias vector;
* ``id+biases``: both (does adding the biases help beyond accuracy?).

The estimator (scikit-learn): ``StandardScaler`` then ``RidgeCV`` — ridge regression with an
unpenalised intercept whose penalty is chosen from ``ALPHAS`` (13 values, 10⁻³…10³, log-spaced) by
RidgeCV's exact efficient leave-one-out error inside each training fold (nested: the held-out fold
never takes part in the choice). The outer cross-validation: ``KFold(K, shuffle=True)`` with
``K = min(n, FOLDS)`` (``FOLDS`` = 10), seeded. The out-of-sample R² is scikit-learn's ``r2_score`` of
the pooled out-of-fold predictions: ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` with ȳ the mean of all n values — 0
for a predictor no better than the mean, negative when worse.

Uncertainty:

* permutation p-value: the whole procedure (scaling, penalty choice, folds) repeated with ``y``
  permuted (``N_PERMUTATIONS`` = 1,000, seeded); ``p = (1 + #{R²_perm ≥ R²}) / (1 + N)``, so its floor
  is 1/1001. The permutations are computed in closed form (the ridge fit for a fixed design and
  penalty is linear in ``y``, and the leave-one-out error of a linear smoother is the PRESS identity
  ``eᵢ = (yᵢ − ŷᵢ) / (1 − Hᵢᵢ)``), all permutations in one matrix product per fold and penalty; the
  tests check that this reproduces scikit-learn's predictions to 1e-8;
* a 95 % percentile-bootstrap interval of R² over checkpoints, resampling (y, ŷ) pairs of the
  out-of-fold predictions (``scipy.stats.bootstrap``, paired, seeded): the uncertainty of the score
  given the fitted predictions, not of the refitting;
* the gain of ``id+biases`` over ``id``: ΔR² with the same paired bootstrap over both models'
  predictions.

Fewer than ``MIN_N`` complete checkpoints leave an axis's numbers undefined (NaN).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from biasbench.core.statistics import CONFIDENCE, N_RESAMPLES, SEED

ALPHAS = np.logspace(-3, 3, 13)
FOLDS = 10
N_PERMUTATIONS = 1000
MIN_N = 8
MODELS = ("id", "biases", "id+biases")

COLUMNS = [
    "y",
    "model",
    "n",
    "features",
    "r2",
    "r2_low",
    "r2_high",
    "p_perm",
    "gain",
    "gain_low",
    "gain_high",
]


@dataclass(frozen=True)
class PredictionOptions:
    permutations: int = N_PERMUTATIONS
    folds: int = FOLDS
    confidence: float = CONFIDENCE
    n_resamples: int = N_RESAMPLES
    seed: int = SEED


def _folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    k = min(n, folds)
    return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)))


def cv_predict(X: np.ndarray, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold predictions of scikit-learn's scaled ``RidgeCV`` (the reference computation)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    return cross_val_predict(model, X, y, cv=list(folds))


def _smoothers(X: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every penalty: the training fold's hat matrix ``H`` (alphas × m × m) and the test rows'
    prediction matrix ``G`` (alphas × t × m), both linear in the training ``y``; ``X`` scaled on the
    training fold, an unpenalised intercept column."""
    xt = X[train]
    mean, sd = xt.mean(axis=0), xt.std(axis=0)
    sd[sd == 0] = 1.0  # as StandardScaler: a constant column stays 0
    a_tr = np.column_stack([np.ones(len(train)), (xt - mean) / sd])
    a_te = np.column_stack([np.ones(len(test)), (X[test] - mean) / sd])
    gram = a_tr.T @ a_tr
    pen = np.eye(gram.shape[0])
    pen[0, 0] = 0.0
    inv = np.linalg.inv(gram[None] + ALPHAS[:, None, None] * pen[None])  # alphas × p × p
    proj = inv @ a_tr.T[None]  # alphas × p × m
    return a_tr[None] @ proj, a_te[None] @ proj


def permuted_predictions(
    X: np.ndarray, Y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold predictions of the same procedure as :func:`cv_predict` for every column of ``Y``
    (n × P) at once: per fold, the penalty with the least leave-one-out squared error (PRESS) on the
    training fold, then the test rows' prediction under it."""
    out = np.empty_like(Y, dtype=float)
    for train, test in folds:
        hat, pred = _smoothers(X, train, test)
        yt = Y[train]  # m × P
        fitted = hat @ yt[None]  # alphas × m × P
        lev = np.einsum("aii->ai", hat)[:, :, None]
        press = (((yt[None] - fitted) / (1.0 - lev)) ** 2).mean(axis=1)  # alphas × P
        best = press.argmin(axis=0)  # P (the first of ties, as RidgeCV)
        test_pred = pred @ yt[None]  # alphas × t × P
        out[test] = np.take_along_axis(test_pred, best[None, None, :], axis=0)[0]
    return out


def r2(y: np.ndarray, pred: np.ndarray, axis: int = 0) -> np.ndarray:
    """Out-of-sample R² of ``pred`` against ``y`` along ``axis`` (the checkpoints), the mean taken over
    all of ``y``; ``y`` (n) against ``pred`` (n × P) scores every column."""
    y = np.asarray(y, float)
    pred = np.asarray(pred, float)
    if y.ndim < pred.ndim:
        y = y[:, None]
    ss_res = ((y - pred) ** 2).sum(axis=axis)
    ss_tot = ((y - y.mean(axis=axis, keepdims=True)) ** 2).sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - ss_res / ss_tot


def _bootstrap(data: tuple[np.ndarray, ...], stat, options: PredictionOptions) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            data,
            stat,
            paired=True,
            vectorized=True,
            confidence_level=options.confidence,
            n_resamples=options.n_resamples,
            method="percentile",
            random_state=np.random.default_rng(options.seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _gain(y: np.ndarray, full: np.ndarray, base: np.ndarray, axis: int = -1) -> np.ndarray:
    return r2(y, full, axis) - r2(y, base, axis)


def predict_axis(
    values: pd.DataFrame,
    y: str,
    biases: Sequence[str],
    control: str | None,
    options: PredictionOptions = PredictionOptions(),
) -> list[dict[str, object]]:
    """The rows (``COLUMNS``) of one generalization axis: one per model of ``MODELS`` whose features
    exist (no ``id`` models without a control)."""
    biases = [b for b in biases if b != y and b != control]
    cols = [y, *biases] + ([control] if control and control != y else [])
    data = values[cols].dropna()
    n = len(data)
    specs = {"biases": list(biases)}
    if control and control != y:
        specs = {"id": [control], "biases": list(biases), "id+biases": [control, *biases]}
    rows: list[dict[str, object]] = []
    preds: dict[str, np.ndarray] = {}
    target = data[y].to_numpy(float) if n else np.empty(0)
    defined = n >= MIN_N and len(biases) > 0 and np.ptp(target) > 0
    folds = _folds(n, options.folds, options.seed) if defined else []
    rng = np.random.default_rng(options.seed)
    perms = (
        np.stack([rng.permutation(target) for _ in range(options.permutations)], axis=1) if defined else None
    )
    for model in MODELS:
        if model not in specs:
            continue
        feats = specs[model]
        row: dict[str, object] = {"y": y, "model": model, "n": n, "features": len(feats)}
        row.update({c: float("nan") for c in COLUMNS[4:]})
        if defined and feats:
            X = data[feats].to_numpy(float)
            pred = cv_predict(X, target, folds)
            preds[model] = pred
            score = float(r2(target, pred))
            null = r2(perms, permuted_predictions(X, perms, folds))
            row["r2"] = score
            row["r2_low"], row["r2_high"] = _bootstrap((target, pred), r2, options)
            row["p_perm"] = float((1 + np.sum(null >= score - 1e-12)) / (1 + options.permutations))
        rows.append(row)
    if "id" in preds and "id+biases" in preds:
        full = next(r for r in rows if r["model"] == "id+biases")
        full["gain"] = float(r2(target, preds["id+biases"]) - r2(target, preds["id"]))
        full["gain_low"], full["gain_high"] = _bootstrap(
            (target, preds["id+biases"], preds["id"]), _gain, options
        )
    return rows


def prediction_table(
    values: pd.DataFrame,
    axes: Sequence[str],
    biases: Sequence[str],
    control: str | None,
    options: PredictionOptions = PredictionOptions(),
) -> pd.DataFrame:
    """For each generalization axis, the out-of-sample R² of ID accuracy, the biases and both."""
    rows = [r for y in axes for r in predict_axis(values, y, biases, control, options)]
    return pd.DataFrame(rows, columns=COLUMNS)
