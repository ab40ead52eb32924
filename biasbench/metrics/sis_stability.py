"""SIS stability: how far two numerically different, mathematically equal BackSelect runs part ways.

Batched-Gradient BackSelect is greedy: where two pixels' gradients are closer than the floating-point
noise of the run, which one goes first depends on how the sums were ordered (batch composition, memory
format, thread count, device), and from that step on the two trajectories differ (issue 17). SIS's
``stability`` parameter reruns a seeded subset of the images along a second path — each image alone
(batch of one) with the model and the input in the other memory format (channels-last ↔ contiguous),
same precision and ranking — and stores that trace beside the first (``alt_order``, ``alt_conf``,
``alt_c0``; empty arrays / −1 for images not rerun).

Per rerun image (the main run is path a, the rerun path b):

* ``first_divergence``: the first step ``t`` at which the two removal sets differ, i.e. the smallest
  ``min(order_a[i], order_b[i])`` over the pixels whose orders differ; ``T`` (the number of steps) when
  the traces are identical; 0 when the clean predictions ``c0`` differ.
* ``size_ratio`` = ``|SIS_b| / |SIS_a|`` and ``jaccard`` = ``|SIS_a ∩ SIS_b| / |SIS_a ∪ SIS_b|`` (1 when
  both are empty) at the run's ``τ``; NaN unless the image is covered on both paths (``|SIS_a| > 0``
  for the ratio).

Scalars (over the rerun images; a key whose defining set is empty is left out): ``stability_n_images``;
``stability_identical_frac`` (traces identical); ``stability_first_divergence_median`` (steps);
``stability_first_divergence_frac_median`` (that step over ``T``, comparable across input sizes);
``stability_abs_dsis_frac_median`` (median ``|SIS fraction_a − SIS fraction_b|``, images covered on
both paths); ``stability_jaccard_median``; ``stability_sis_size_spearman`` (Spearman ρ of the SIS
sizes across images between the two paths, ``scipy.stats.spearmanr``; left out with fewer than three
images or constant sizes).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from biasbench.core.errors import InputError
from biasbench.metrics.sis_sets import sis_mask


def first_divergence(order_a: np.ndarray, order_b: np.ndarray, steps: int) -> int:
    """First step at which the two removal sets differ; ``steps`` (``T``) if the traces agree."""
    a = np.asarray(order_a, dtype=np.int64)
    b = np.asarray(order_b, dtype=np.int64)
    if a.shape != b.shape:
        raise InputError(f"traces of different sizes: {a.shape} vs {b.shape}")
    diff = a != b
    if not diff.any():
        return int(steps)
    return int(min(a[diff].min(), b[diff].min()))


def pair_stats(
    order_a: np.ndarray,
    conf_a: np.ndarray,
    c0_a: int,
    order_b: np.ndarray,
    conf_b: np.ndarray,
    c0_b: int,
    tau: float,
) -> dict[str, float]:
    """``first_divergence``, ``size_ratio`` and ``jaccard`` of one image's two traces (module docstring)."""
    steps = np.asarray(conf_a).size - 1
    fd = 0 if c0_a != c0_b else first_divergence(order_a, order_b, steps)
    ma, mb = sis_mask(order_a, conf_a, tau), sis_mask(order_b, conf_b, tau)
    ratio = jac = math.nan
    if ma is not None and mb is not None:
        na, nb = int(ma.sum()), int(mb.sum())
        union = int((ma | mb).sum())
        jac = int((ma & mb).sum()) / union if union else 1.0
        ratio = nb / na if na else math.nan
    return {"first_divergence": float(fd), "size_ratio": ratio, "jaccard": jac}


def rerun_mask(traces: pd.DataFrame) -> np.ndarray:
    """Rows that carry a second-path trace."""
    if "alt_order" not in traces:
        return np.zeros(len(traces), dtype=bool)
    return np.array([np.asarray(o).size > 0 for o in traces["alt_order"]], dtype=bool)


def _sis_frac(order: np.ndarray, conf: np.ndarray, tau: float) -> float:
    m = sis_mask(order, conf, tau)
    return math.nan if m is None else float(m.mean())


def stability_scalars(traces: pd.DataFrame, tau: float) -> dict[str, float]:
    """The stability scalars (module docstring) from stored traces alone, at any ``τ``."""
    rows = traces[rerun_mask(traces)]
    if not len(rows):
        return {}
    fd, fd_frac, dfrac, jac, size_a, size_b = [], [], [], [], [], []
    for r in rows.itertuples(index=False):
        ps = pair_stats(r.order, r.conf, int(r.c0), r.alt_order, r.alt_conf, int(r.alt_c0), tau)
        steps = np.asarray(r.conf).size - 1
        fd.append(ps["first_divergence"])
        fd_frac.append(ps["first_divergence"] / max(steps, 1))
        fa, fb = _sis_frac(r.order, r.conf, tau), _sis_frac(r.alt_order, r.alt_conf, tau)
        if not (math.isnan(fa) or math.isnan(fb)):
            dfrac.append(abs(fa - fb))
            jac.append(ps["jaccard"])
            n_pix = np.asarray(r.order).size
            size_a.append(fa * n_pix)
            size_b.append(fb * n_pix)
    identical = [
        int(r.c0) == int(r.alt_c0) and np.array_equal(np.asarray(r.order), np.asarray(r.alt_order))
        for r in rows.itertuples(index=False)
    ]
    out: dict[str, float] = {
        "stability_n_images": float(len(rows)),
        "stability_identical_frac": float(np.mean(identical)),
        "stability_first_divergence_median": float(np.median(fd)),
        "stability_first_divergence_frac_median": float(np.median(fd_frac)),
    }
    if dfrac:
        out["stability_abs_dsis_frac_median"] = float(np.median(dfrac))
        out["stability_jaccard_median"] = float(np.median(jac))
    if len(size_a) >= 3 and np.ptp(size_a) > 0 and np.ptp(size_b) > 0:
        out["stability_sis_size_spearman"] = float(stats.spearmanr(size_a, size_b).statistic)
    return out


def stability_counts(traces: pd.DataFrame, tau: float) -> dict[str, int]:
    """How many rerun images each stability scalar rests on."""
    rows = traces[rerun_mask(traces)]
    both = sum(
        sis_mask(r.order, r.conf, tau) is not None and sis_mask(r.alt_order, r.alt_conf, tau) is not None
        for r in rows.itertuples(index=False)
    )
    n = len(rows)
    return {
        "stability_n_images": n,
        "stability_identical_frac": n,
        "stability_first_divergence_median": n,
        "stability_first_divergence_frac_median": n,
        "stability_abs_dsis_frac_median": both,
        "stability_jaccard_median": both,
        "stability_sis_size_spearman": both,
    }


__all__ = [
    "first_divergence",
    "pair_stats",
    "rerun_mask",
    "stability_counts",
    "stability_scalars",
]
