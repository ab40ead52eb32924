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
  ``eᵢ = (yᵢ − ŷᵢ) / (1 − Hᵢᵢ)``), all permutations in one matrix product per fold; the observed y
  goes through the same closed form (no model is refitted per fold in Python). The tests check that this
  reproduces scikit-learn's ``cross_val_predict`` of the pipeline above (:func:`cv_predict`, the
  reference) to 1e-8;
* a 95 % percentile-bootstrap interval of R² over checkpoints, resampling (y, ŷ) pairs of the
  out-of-fold predictions (``scipy.stats.bootstrap``, paired, seeded): the uncertainty of the score
  given the fitted predictions, not of the refitting;
* the gain of ``id+biases`` over ``id``: ΔR² with the same paired bootstrap over both models'
  predictions, and a permutation p-value for ΔR² (``p_gain``) by the Freedman–Lane scheme. The null
  it tests: *given ID accuracy, the biases carry no linear information about y* — y = a + b·ID + e with
  exchangeable errors e that do not depend on the biases. Under it, the residuals ``e`` of the
  ordinary least-squares fit of y on ID (all n checkpoints, with an intercept) may be permuted: each
  permutation builds ``y* = ŷ_ID + P e`` and repeats the whole procedure for both models (``id`` and
  ``id+biases``, the designs unchanged, so the same closed form serves), giving ΔR²*; ``p_gain =
  (1 + #{ΔR²* ≥ ΔR²}) / (1 + N)``. Permuting residuals rather than the bias block's rows keeps the
  biases' correlation with ID accuracy (a bias that is only a proxy for ID is not rewarded), which
  permuting the bias rows would break.

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
    "p_gain",
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


def _smoothers(
    X: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every penalty, with ``X`` scaled on the training fold and an unpenalised intercept column:
    the coefficient map ``C`` (alphas × p × m; the coefficients are ``C @ y_train``), the training rows'
    leverages ``diag(H)`` (alphas × m, ``H = A C`` the hat matrix, never formed) and the scaled training
    and test designs stacked as one (m + t) × p matrix ``A`` — everything is linear in the training
    ``y``, so every permutation costs one product with ``C``."""
    xt = X[train]
    mean, sd = xt.mean(axis=0), xt.std(axis=0)
    sd[sd == 0] = 1.0  # as StandardScaler: a constant column stays 0
    a_tr = np.column_stack([np.ones(len(train)), (xt - mean) / sd])
    a_te = np.column_stack([np.ones(len(test)), (X[test] - mean) / sd])
    gram = a_tr.T @ a_tr
    pen = np.eye(gram.shape[0])
    pen[0, 0] = 0.0
    inv = np.linalg.inv(gram[None] + ALPHAS[:, None, None] * pen[None])  # alphas × p × p
    coef = inv @ a_tr.T[None]  # alphas × p × m
    lev = np.einsum("mp,apm->am", a_tr, coef)
    return coef, lev, np.vstack([a_tr, a_te])


def permuted_predictions(
    X: np.ndarray, Y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold predictions of the same procedure as :func:`cv_predict` for every column of ``Y``
    (n × P) at once: per fold, the penalty with the least leave-one-out squared error (PRESS) on the
    training fold, then the test rows' prediction under it."""
    out = np.empty_like(Y, dtype=float)
    for train, test in folds:
        coef, lev, design = _smoothers(X, train, test)
        m = len(train)
        yt = Y[train]  # m × P
        a, q = coef.shape[:2]
        beta = (coef.reshape(a * q, m) @ yt).reshape(a, q, -1)  # alphas × p × P, one product
        # every penalty's fitted values in one product too (a broadcast stack of small products is
        # an order of magnitude slower)
        fitted = (
            (design @ beta.transpose(1, 0, 2).reshape(q, -1)).reshape(len(design), a, -1).transpose(1, 0, 2)
        )
        press = (((yt[None] - fitted[:, :m]) / (1.0 - lev[:, :, None])) ** 2).mean(axis=1)  # alphas × P
        best = press.argmin(axis=0)  # P (the first of ties, as RidgeCV)
        out[test] = np.take_along_axis(fitted[:, m:], best[None, None, :], axis=0)[0]
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


def _p(null: np.ndarray, observed: float, permutations: int) -> float:
    """``(1 + #{null ≥ observed}) / (1 + N)``, a tie within rounding counted as reached."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + permutations))


def gain_permutation_p(
    control: np.ndarray,
    full: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    permutations: int,
    seed: int,
) -> float:
    """The Freedman–Lane permutation p-value of ΔR² = R²(``full``) − R²(``control``) (designs n × p;
    the module docstring states the null): the residuals of y's least-squares fit on ``control`` are
    permuted, added back to its fitted values, and both models are refitted in closed form."""
    ones = np.column_stack([np.ones(len(y)), control])
    beta, *_ = np.linalg.lstsq(ones, y, rcond=None)
    fitted = ones @ beta
    resid = y - fitted
    rng = np.random.default_rng(seed)
    Y = fitted[:, None] + np.stack([rng.permutation(resid) for _ in range(permutations)], axis=1)
    Y = np.column_stack([y, Y])  # the observed y first: its ΔR² by the very same computation
    gains = r2(Y, permuted_predictions(full, Y, folds)) - r2(Y, permuted_predictions(control, Y, folds))
    return _p(gains[1:], float(gains[0]), permutations)


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
        np.stack([rng.permutation(target) for _ in range(options.permutations)], axis=1)
        if defined and options.permutations
        else None
    )
    for model in MODELS:
        if model not in specs:
            continue
        feats = specs[model]
        row: dict[str, object] = {"y": y, "model": model, "n": n, "features": len(feats)}
        row.update({c: float("nan") for c in COLUMNS[4:]})
        if defined and feats:
            X = data[feats].to_numpy(float)
            # the observed y alone (its predictions must not depend on the number of permutations,
            # not even in the last bit), then the permutations, by the same closed form
            pred = permuted_predictions(X, target[:, None], folds)[:, 0]
            preds[model] = pred
            score = float(r2(target, pred))
            row["r2"] = score
            row["r2_low"], row["r2_high"] = _bootstrap((target, pred), r2, options)
            if perms is not None:
                null = r2(perms, permuted_predictions(X, perms, folds))
                row["p_perm"] = _p(null, score, options.permutations)
        rows.append(row)
    if "id" in preds and "id+biases" in preds:
        full = next(r for r in rows if r["model"] == "id+biases")
        full["gain"] = float(r2(target, preds["id+biases"]) - r2(target, preds["id"]))
        full["gain_low"], full["gain_high"] = _bootstrap(
            (target, preds["id+biases"], preds["id"]), _gain, options
        )
        if options.permutations:
            full["p_gain"] = gain_permutation_p(
                data[[control]].to_numpy(float),
                data[specs["id+biases"]].to_numpy(float),
                target,
                folds,
                options.permutations,
                options.seed,
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
