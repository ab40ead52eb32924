"""The report's statistics: correlations across checkpoints with their uncertainty.

For every (bias, generalization) pair, over the checkpoints that have both values (``n``):

* the correlation coefficient and its two-sided p-value — Spearman's ρ (default), Pearson's r or
  Kendall's τ-b, from ``scipy.stats`` (Gavrikov & Keuper 2024 report Spearman across their zoo);
* a 95 % percentile-bootstrap interval over checkpoints: ``scipy.stats.bootstrap`` with
  ``paired=True`` (checkpoints are resampled with both their values), seeded, ``N_RESAMPLES``
  resamples. Resamples whose correlation is undefined (a constant column) are left out of the
  percentiles and counted;
* the p-values adjusted within their correction family — by default every cell of the table — with
  Holm (default) or Benjamini–Hochberg (``statsmodels.stats.multitest.multipletests``), or none
  (the families themselves: :func:`family_labels`);
* the partial Spearman correlation controlling for in-distribution accuracy (is the bias informative
  beyond accuracy?): Pearson's r of the ranks of both variables after the ranks of the covariate are
  regressed out, computed as ρ_xy·z = (ρ_xy − ρ_xz ρ_yz) / √((1 − ρ_xz²)(1 − ρ_yz²)), with the
  p-value of a t statistic on n − 3 degrees of freedom (as pingouin's ``partial_corr``);
* the leave-one-category-out range: the coefficient recomputed with each category of a tag (e.g.
  adversarially trained models) left out in turn; a range that crosses zero says the correlation is
  carried by one category.

Fewer than ``MIN_N`` checkpoints, or a constant variable, leave a cell's numbers undefined (NaN).
"""

from __future__ import annotations

import gc
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from biasbench.core.errors import InputError
from biasbench.core.statistics import CONFIDENCE, N_RESAMPLES, SEED

METHODS = ("spearman", "pearson", "kendall")
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "none": None}
SYMBOL = {"spearman": "ρ", "pearson": "r", "kendall": "τ"}
MIN_N = 3  # a coefficient
MIN_N_CI = 4  # a bootstrap interval

COLUMNS = [
    "x",
    "y",
    "method",
    "r",
    "ci_low",
    "ci_high",
    "p",
    "p_adj",
    "partial_r",
    "partial_p",
    "n",
    "loco_min",
    "loco_max",
    "loco_drop",
    "family",
]


def _quiet(fn: Callable[..., float]) -> Callable[..., float]:
    def wrapped(*a: object, **k: object) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant resamples: scipy warns and returns NaN
            return fn(*a, **k)

    return wrapped


def correlation(x: Sequence[float], y: Sequence[float], method: str = "spearman") -> tuple[float, float]:
    """``(coefficient, two-sided p)`` from scipy; NaN for fewer than ``MIN_N`` pairs or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < MIN_N or np.all(x == x[0]) or np.all(y == y[0]):
        return (float("nan"), float("nan"))
    fn = {"spearman": stats.spearmanr, "pearson": stats.pearsonr, "kendall": stats.kendalltau}[method]
    res = _quiet(fn)(x, y)
    return (float(res.statistic), float(res.pvalue))


def _vectorised(method: str) -> tuple[Callable[..., np.ndarray], bool]:
    """The bootstrap statistic for ``scipy.stats.bootstrap`` and whether it takes an ``axis``."""
    if method == "kendall":
        return (lambda x, y: stats.kendalltau(x, y).statistic), False

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        if method == "spearman":  # x, y: dense codes (see bootstrap_cis)
            x, y = _average_ranks(x, axis), _average_ranks(y, axis)
        return stats.pearsonr(x, y, axis=axis).statistic

    return stat, True


def _average_ranks(codes: np.ndarray, axis: int = -1) -> np.ndarray:
    """``scipy.stats.rankdata(codes, axis=axis)`` (average ranks of ties) for whole-number codes
    0 … K − 1, by counting instead of sorting: a code's average rank is the number of values at or
    below it minus (its count − 1) / 2 — whole and half numbers, so exactly rankdata's values. The
    bootstrap ranks every resample of every pair; counting makes that linear in n."""
    moved = np.moveaxis(np.asarray(codes), axis, -1)
    flat = moved.reshape(-1, moved.shape[-1]).astype(np.int64)
    rows, k = flat.shape[0], int(flat.max()) + 1 if flat.size else 1
    counts = np.bincount((flat + k * np.arange(rows)[:, None]).ravel(), minlength=rows * k).reshape(rows, k)
    average = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
    ranks = np.take_along_axis(average, flat, axis=1).reshape(moved.shape)
    return np.moveaxis(ranks, -1, axis)


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    method: str = "spearman",
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float, int]:
    """The percentile-bootstrap interval of the correlation over resampled checkpoints (paired), and
    how many resamples had no defined correlation (left out of the percentiles)."""
    return bootstrap_cis([(x, y)], method, confidence=confidence, n_resamples=n_resamples, seed=seed)[0]


def bootstrap_cis(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
    method: str = "spearman",
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> list[tuple[float, float, int]]:
    """:func:`bootstrap_ci` for many pairs at once: the pairs of one length go through one call of
    ``scipy.stats.bootstrap`` with the pairs as a batch dimension. Each pair's resamples are the ones
    its own call would draw (the paired resampling draws indices from the seed and the length
    only), so every interval is the one :func:`bootstrap_ci` gives alone."""
    out: list[tuple[float, float, int]] = [(float("nan"), float("nan"), 0)] * len(pairs)
    by_n: dict[int, list[int]] = {}
    arrays = []
    for k, (x, y) in enumerate(pairs):
        x, y = np.asarray(x, float), np.asarray(y, float)
        if method == "spearman":  # ρ depends on the order only: resample the dense ranks (exactly)
            x, y = (stats.rankdata(v, method="dense") - 1.0 if len(v) else v for v in (x, y))
        arrays.append((x, y))
        if len(x) < MIN_N_CI or np.all(x == x[0]) or np.all(y == y[0]):
            continue
        by_n.setdefault(len(x), []).append(k)
    stat, vectorized = _vectorised(method)
    for ks in by_n.values():
        batches = [ks] if vectorized else [[k] for k in ks]
        for batch in batches:
            xs = np.stack([arrays[k][0] for k in batch])
            ys = np.stack([arrays[k][1] for k in batch])
            if not vectorized:
                xs, ys = xs[0], ys[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = stats.bootstrap(
                    (xs, ys),
                    stat,
                    paired=True,
                    vectorized=vectorized,
                    confidence_level=confidence,
                    n_resamples=n_resamples,
                    method="percentile",
                    random_state=np.random.default_rng(seed),
                    axis=-1,
                )
            lows = np.atleast_1d(res.confidence_interval.low)
            highs = np.atleast_1d(res.confidence_interval.high)
            dists = np.asarray(res.bootstrap_distribution, float).reshape(len(batch), -1)
            for j, k in enumerate(batch):
                lo, hi, dist = lows[j], highs[j], dists[j]
                undefined = int(np.isnan(dist).sum())
                if undefined and undefined < dist.size:  # the same percentiles over the defined resamples
                    alpha = (1 - confidence) / 2
                    lo, hi = np.nanpercentile(dist, [100 * alpha, 100 * (1 - alpha)])
                out[k] = (float(lo), float(hi), undefined)
    return out


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> tuple[float, float]:
    """Spearman's ρ of ``x`` and ``y`` controlling for ``z``, and its two-sided p (t on n − 3 df)."""
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    n = len(x)
    if n < MIN_N + 1 or any(np.all(v == v[0]) for v in (x, y, z)):
        return (float("nan"), float("nan"))
    rxy, rxz, ryz = (correlation(a, b)[0] for a, b in ((x, y), (x, z), (y, z)))
    denom = (1 - rxz**2) * (1 - ryz**2)
    if not denom > 0:  # x or y is a monotone function of z: nothing is left beyond it
        return (float("nan"), float("nan"))
    r = float(np.clip((rxy - rxz * ryz) / np.sqrt(denom), -1.0, 1.0))
    df = n - 3
    if abs(r) == 1.0:
        return (r, 0.0)
    t = r * np.sqrt(df / (1 - r**2))
    return (r, float(2 * stats.t.sf(abs(t), df)))


def leave_one_category_out(
    x: Sequence[float], y: Sequence[float], categories: Sequence[str], method: str = "spearman"
) -> tuple[float, float, str]:
    """``(min, max)`` of the coefficient with each category left out in turn, and the category whose
    removal moves it most (empty when fewer than two categories or too few checkpoints remain)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    cats = np.asarray([str(c) for c in categories])
    full = correlation(x, y, method)[0]
    found: dict[str, float] = {}
    for c in sorted(set(cats)):
        keep = cats != c
        r = correlation(x[keep], y[keep], method)[0]
        if not np.isnan(r):
            found[c] = r
    if len(set(cats)) < 2 or not found:
        return (float("nan"), float("nan"), "")
    drop = max(found, key=lambda c: abs(found[c] - full) if not np.isnan(full) else abs(found[c]))
    return (min(found.values()), max(found.values()), drop)


def adjust(p: Sequence[float], correction: str = "holm", families: Sequence[str] | None = None) -> np.ndarray:
    """``p`` adjusted for multiple comparisons over the finite values (``holm``, ``bh`` or ``none``),
    within each family: the values with the same label in ``families`` (default: all one family)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    labels = np.zeros(len(p), dtype=int) if families is None else pd.factorize(np.asarray(families))[0]
    method = CORRECTIONS[correction]
    # multipletests calls gc.collect() each time: with the objects alive now frozen (gc.freeze) the
    # collection skips them — a quarter of a second per call in a process that has imported torch
    gc.freeze()
    try:
        for fam in np.unique(labels):
            ok = np.isfinite(p) & (labels == fam)
            if method is None:
                out[ok] = p[ok]
            elif ok.any():
                out[ok] = multipletests(p[ok], method=method)[1]
    finally:
        gc.unfreeze()
    return out


#: ``family`` specifications that name a rule (anything else is a list of keys)
FAMILIES = ("table", "column", "row")
#: the family label of the cells outside a fixed list of keys
REST = "rest"


def family_labels(pairs: Sequence[tuple[str, str]], family: str | Sequence[str] = "table") -> list[str]:
    """The correction family of each (x, y) pair. ``"table"``: one family, every pair of the table
    (labelled ``"table"``); ``"column"``: one per generalization axis (``y``); ``"row"``: one per bias
    (``x``); a sequence of column names (a fixed family, e.g. the keys a study pre-registered): the
    pairs whose two columns are both among them form the family ``"fixed"``, every other pair the
    family ``"rest"`` — so a key added to the results never changes the fixed family's adjusted p."""
    if isinstance(family, str):
        if family not in FAMILIES:
            raise InputError(
                f"unknown correction family {family!r} ({', '.join(FAMILIES)} or a list of keys)"
            )
        if family == "table":
            return ["table"] * len(pairs)
        return [f"{family} {y if family == 'column' else x}" for x, y in pairs]
    chosen = set(family)
    return ["fixed" if x in chosen and y in chosen else REST for x, y in pairs]


@dataclass(frozen=True)
class Options:
    method: str = "spearman"
    correction: str = "holm"
    confidence: float = CONFIDENCE
    n_resamples: int = N_RESAMPLES
    seed: int = SEED
    #: the study's display (Gavrikov & Keuper 2024): a coefficient whose uncorrected p is ≥ this is shown
    #: as 0 (``None``: every coefficient shown; the table keeps the real ones and marks the masked)
    mask_p: float | None = None


def correlation_table(
    values: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    control: str | None = None,
    categories: pd.Series | None = None,
    options: Options = Options(),
    families: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (x, y) pair with the columns ``COLUMNS`` (``values``: checkpoints × columns;
    ``control``: the column to partial out; ``categories``: a category per checkpoint; ``families``:
    each pair's correction family, :func:`family_labels`; default one family)."""
    if options.method not in METHODS:
        raise InputError(f"unknown method {options.method!r} ({', '.join(METHODS)})")
    if options.correction not in CORRECTIONS:
        raise InputError(f"unknown correction {options.correction!r} ({', '.join(CORRECTIONS)})")
    rows = []
    data = [values[[x, y]].dropna() for x, y in pairs]
    cis = bootstrap_cis(
        [(pair[x], pair[y]) for (x, y), pair in zip(pairs, data, strict=True)],
        options.method,
        confidence=options.confidence,
        n_resamples=options.n_resamples,
        seed=options.seed,
    )
    for (x, y), pair, (lo, hi, _) in zip(pairs, data, cis, strict=True):
        row: dict[str, object] = {"x": x, "y": y, "method": options.method, "n": len(pair)}
        r, p = correlation(pair[x], pair[y], options.method)
        row.update(r=r, p=p, ci_low=lo, ci_high=hi)
        pr = pp = float("nan")
        if control is not None and control in values and control not in (x, y):
            trio = values[[x, y, control]].dropna()
            pr, pp = partial_spearman(trio[x], trio[y], trio[control])
        row.update(partial_r=pr, partial_p=pp)
        lmin = lmax = float("nan")
        drop = ""
        if categories is not None:
            cats = categories.reindex(pair.index).fillna("(untagged)")
            lmin, lmax, drop = leave_one_category_out(pair[x], pair[y], list(cats), options.method)
        row.update(loco_min=lmin, loco_max=lmax, loco_drop=drop)
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["p_adj"] = adjust(out["p"].to_numpy(), options.correction, families) if len(out) else []
    out["family"] = list(families) if families is not None else "table"
    return out


def grid_pairs(rows: Sequence[str], cols: Sequence[str]) -> list[tuple[str, str]]:
    """Every (row, column) pair: the curated bias × generalization table."""
    return [(r, c) for r in rows for c in cols if r != c]


def all_pairs(keys: Sequence[str], metric_of: Callable[[str], str] | None = None) -> list[tuple[str, str]]:
    """Every unordered pair of ``keys`` (with ``metric_of``: only pairs of two different metrics)."""
    return [
        (a, b)
        for a, b in itertools.combinations(keys, 2)
        if metric_of is None or metric_of(a) != metric_of(b)
    ]


def check_choice(method: str, correction: str) -> None:
    """An unknown correlation method or p-value correction is an :class:`InputError` listing the known."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} ({', '.join(METHODS)})")
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r} ({', '.join(CORRECTIONS)})")
