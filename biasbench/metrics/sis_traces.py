"""SIS traces: what one BackSelect run stores per image, and everything computed from it without the model.

Trace conventions (one image of ``P = H·W`` pixels, BackSelect with ``k`` pixels per step)
-----------------------------------------------------------------------------------------

* ``T = ceil(P / k)`` steps, numbered ``t = 0 … T−1``. Steps ``0 … T−2`` mask exactly ``k`` pixels,
  the last step masks what is left (``P − (T−1)·k`` pixels, between 1 and ``k``). Exact BackSelect is
  ``k = 1`` (``T = P``).
* ``order`` (int16 when ``T ≤ 32767``, else int32; shape ``(P,)``, row-major flat pixel index
  ``i = row·W + col``): ``order[i] = t`` ⇔ pixel ``i`` was masked at step ``t``. Low order = masked
  early = least needed; the pixels with the highest order are the ones BackSelect kept longest.
  The pixels still unmasked *before* step ``t`` are exactly ``{i : order[i] ≥ t}``.
* ``conf`` (float32, shape ``(T + 1,)``): ``conf[t] = f(x with the pixels of order < t at the baseline)``
  — the confidence *before* step ``t``. So ``conf[0] = f(clean image)`` (the clean confidence of
  ``c0``) and ``conf[T] = f(fully masked image)`` (every pixel at the baseline; the value "before" a
  step ``T`` that does not exist). ``f`` = fp32 softmax probability of ``c0``, the class predicted on
  the clean image. (Google-research's ``sis.py`` stores the value *after* each masking instead: its
  ``values_over_entire_backselect[t]`` is our ``conf[t + 1]``.)

SIS at threshold ``τ``
----------------------

* An image is **covered** iff ``conf[0] ≥ τ``. Images with ``conf[0] < τ`` have no SIS (the model is
  not confident enough on the clean image, Carter et al.'s convention): they are excluded from every
  SIS statistic and count against ``coverage`` only.
* For a covered image, ``t* = max{t ∈ 0…T : conf[t] ≥ τ}`` and ``SIS = {i : order[i] ≥ t*}``: the
  pixels still unmasked in the last state whose confidence reaches ``τ``. The SIS-only image (every
  other pixel at the baseline) is exactly that state, so ``f(SIS-only) = conf[t*] ≥ τ``. If
  ``t* < T``, masking the group of order ``t*`` too (one pixel for exact BackSelect — the pixel added
  to the SIS last) gives ``conf[t* + 1] < τ`` by the maximality of ``t*``.
* ``t* = T`` means the fully masked image itself reaches ``τ``: the SIS is empty. Such images are
  counted in ``fully_masked_conf_ge_tau`` (and the run is flagged) — the baseline is not uninformative.
* ``|SIS| = #{i : order[i] ≥ t*}``; the SIS fraction is ``|SIS| / P``.

Top-q subsets (what evaluate measures with the model)
-----------------------------------------------------

The *backselect subset* keeps ``n_q = ceil(q·P)`` pixels — the ones masked last, i.e. highest order;
pixels of equal order (masked in the same Batched-Gradient step) are ranked by lower flat index first
(a stable sort of ``−order``) — and sets every other pixel to the baseline. The *random subset* keeps
``n_q`` pixels drawn uniformly without replacement from a generator seeded by ``(seed, item id)``.
Their confidences (``f``) and predictions (argmax) are stored per image; only their aggregation is
redone here, so a recompute with another ``q`` changes the sufficiency rate but not the subset keys
(those stay at the ``q`` stored in the ``subset_q`` column).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from biasbench.core.errors import InputError
from biasbench.core.statistics import bootstrap_ci
from biasbench.metrics.sis_sets import sis_mask, sis_size, threshold_step  # noqa: F401 - re-exported
from biasbench.metrics.sis_stability import stability_counts, stability_scalars


def num_steps(num_pixels: int, k: int) -> int:
    """``T = ceil(P / k)``: the number of BackSelect steps for ``P`` pixels, ``k`` per step."""
    if k < 1:
        raise InputError(f"k must be ≥ 1, got {k}")
    return -(-int(num_pixels) // int(k))


def order_dtype(steps: int) -> np.dtype:
    """int16 when every order value (0 … T−1) fits, else int32."""
    return np.dtype(np.int16) if steps <= np.iinfo(np.int16).max else np.dtype(np.int32)


def subset_size(num_pixels: int, q: float) -> int:
    """``ceil(q·P)`` pixels (at least 1), computed so that e.g. q = 0.05, P = 100 gives exactly 5."""
    return max(1, math.ceil(round(q * num_pixels, 9)))


def top_subset(order: np.ndarray, n: int) -> np.ndarray:
    """Flat indices of the ``n`` pixels masked last (highest order; ties → lower flat index first)."""
    order = np.asarray(order)
    return np.argsort(-order.astype(np.int64), kind="stable")[:n]


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if v.size else math.nan


def _top1(pred: np.ndarray, label: np.ndarray) -> float:
    ok = label >= 0
    return float(np.mean(pred[ok] == label[ok])) if ok.any() else math.nan


def sis_fractions(traces: pd.DataFrame, tau: float) -> np.ndarray:
    """SIS size / P per row (NaN where the image is not covered at ``τ``)."""
    out = np.full(len(traces), np.nan)
    for r, (order, conf) in enumerate(zip(traces["order"], traces["conf"], strict=True)):
        s = sis_size(order, conf, tau)
        if s is not None:
            out[r] = s / np.asarray(order).size
    return out


def scalars_from_traces(traces: pd.DataFrame, tau: float, q: float) -> dict[str, float]:
    """Every SIS scalar from stored traces alone (no model): pure, deterministic, any ``τ`` and ``q``.

    Keys (see the module docstring for the trace conventions):

    * ``tau``, ``q``; ``n_images``; ``n_covered``; ``coverage`` = fraction of images with
      ``conf[0] ≥ τ``.
    * Over covered images: ``sis_frac_mean``, ``sis_frac_median``, ``sis_frac_q25``, ``sis_frac_q75``
      (SIS size / P; quantiles with linear interpolation), ``sufficiency_rate`` (fraction with
      SIS fraction ≤ ``q``), ``fully_masked_conf_ge_tau`` (fraction whose fully masked image alone
      reaches ``τ``, i.e. whose SIS is empty).
    * Their uncertainty over images: ``sis_frac_median_ci_low`` / ``_ci_high`` and
      ``sufficiency_rate_ci_low`` / ``_ci_high``, the 95 % percentile-bootstrap interval of the median
      SIS fraction and of the sufficiency rate over the covered images
      (:func:`biasbench.core.statistics.bootstrap_ci`, seeded; left out below two covered images).
    * Top-``q`` subsets, over covered images: ``clean_conf``, ``clean_top1``,
      ``backselect_subset_conf``, ``backselect_subset_top1``, ``random_subset_conf``,
      ``random_subset_top1`` (conf = f = softmax probability of ``c0``; top-1 = argmax equals the
      label, over labeled images); the same over all images with the suffix ``_all``.
    * Over all images: ``fully_masked_conf_mean``, ``fully_masked_conf_max`` (``conf[T]``),
      ``forward_passes_per_image``, ``backward_passes_per_image`` (every model pass the metric made for
      the image: BackSelect, clean and subset evaluations),
      ``zero_gradient_step_frac`` (mean fraction of Batched-Gradient steps whose gradient was exactly 0
      on every unmasked pixel: no signal, index order; 0 for exact BackSelect).
    * Where the traces carry a second-path rerun (``SIS.Params.stability``): the ``stability_*``
      scalars of :func:`biasbench.metrics.sis_stability.stability_scalars`.

    A key whose defining set is empty (e.g. no covered image, no labeled image) is left out — a
    scalar is never NaN. Seconds per image measures the run, not the model: it is a job timing
    (:func:`timings_from_traces`), not a key.
    """
    if not 0.0 <= q <= 1.0:
        raise InputError(f"q must be in [0, 1], got {q}")
    n = len(traces)
    out: dict[str, float] = {"tau": float(tau), "q": float(q), "n_images": float(n)}
    if n == 0:
        out["coverage"] = 0.0
        out["n_covered"] = 0.0
        return out
    clean = np.array([float(np.asarray(c)[0]) for c in traces["conf"]])
    covered = clean >= tau
    frac = sis_fractions(traces, tau)
    masked = np.array([float(np.asarray(c)[-1]) for c in traces["conf"]])
    out["n_covered"] = float(covered.sum())
    out["coverage"] = float(covered.mean())

    fc = frac[covered]
    if fc.size:
        out["sis_frac_mean"] = float(np.mean(fc))
        out["sis_frac_median"] = float(np.median(fc))
        out["sis_frac_q25"] = float(np.quantile(fc, 0.25))
        out["sis_frac_q75"] = float(np.quantile(fc, 0.75))
        out["sufficiency_rate"] = float(np.mean(fc <= q + 1e-12))
        out["sis_frac_median_ci_low"], out["sis_frac_median_ci_high"] = bootstrap_ci(fc, np.median)
        sufficient = (fc <= q + 1e-12).astype(np.float64)
        out["sufficiency_rate_ci_low"], out["sufficiency_rate_ci_high"] = bootstrap_ci(sufficient, np.mean)
        out["fully_masked_conf_ge_tau"] = float(np.mean(masked[covered] >= tau))

    label = traces["label"].to_numpy(dtype=np.int64)
    c0 = traces["c0"].to_numpy(dtype=np.int64)
    cols = {
        "clean": (clean, c0),
        "backselect_subset": (
            traces["backselect_subset_conf"].to_numpy(dtype=np.float64),
            traces["backselect_subset_pred"].to_numpy(dtype=np.int64),
        ),
        "random_subset": (
            traces["random_subset_conf"].to_numpy(dtype=np.float64),
            traces["random_subset_pred"].to_numpy(dtype=np.int64),
        ),
    }
    for name, (conf_v, pred_v) in cols.items():
        for suffix, sel in (("", covered), ("_all", np.ones(n, bool))):
            out[f"{name}_conf{suffix}"] = _mean(conf_v[sel])
            out[f"{name}_top1{suffix}"] = _top1(pred_v[sel], label[sel])

    out["fully_masked_conf_mean"] = float(masked.mean())
    out["fully_masked_conf_max"] = float(masked.max())
    out["forward_passes_per_image"] = float(traces["n_forward"].to_numpy(dtype=np.float64).mean())
    out["backward_passes_per_image"] = float(traces["n_backward"].to_numpy(dtype=np.float64).mean())
    if "zero_grad_steps" in traces:
        steps = np.array([np.asarray(c).size - 1 for c in traces["conf"]], dtype=np.float64)
        zero = traces["zero_grad_steps"].to_numpy(dtype=np.float64)
        out["zero_gradient_step_frac"] = float(np.mean(zero / np.maximum(steps, 1)))
    out.update(stability_scalars(traces, tau))
    return {k: v for k, v in out.items() if not math.isnan(v)}


def timings_from_traces(traces: pd.DataFrame) -> dict[str, float]:
    """The run's timing from the traces: ``seconds_per_image`` (mean wall time per image), stored with
    the job (``jobs.timings``), never as a result (it differs between a resumed and an uninterrupted
    run, and between machines)."""
    if not len(traces) or "seconds" not in traces:
        return {}
    return {"seconds_per_image": float(traces["seconds"].to_numpy(dtype=np.float64).mean())}


def counts_from_traces(traces: pd.DataFrame, tau: float, keys: Sequence[str]) -> dict[str, int]:
    """How many images each scalar in ``keys`` rests on (covered images, all images, or labeled ones)."""
    n = len(traces)
    if n == 0:
        return {k: 0 for k in keys}
    clean = np.array([float(np.asarray(c)[0]) for c in traces["conf"]])
    covered = clean >= tau
    labeled = traces["label"].to_numpy(dtype=np.int64) >= 0
    stab = stability_counts(traces, tau)
    out: dict[str, int] = {}
    for k in keys:
        if k in stab:
            out[k] = stab[k]
        elif k.endswith("_top1_all"):
            out[k] = int(labeled.sum())
        elif k.endswith("_top1"):
            out[k] = int((labeled & covered).sum())
        elif (
            k.startswith("sis_frac")
            or k.startswith("sufficiency_rate")
            or k == "fully_masked_conf_ge_tau"
            or (k.endswith("_conf") and not k.startswith("fully_masked"))
        ):
            out[k] = int(covered.sum())
        else:
            out[k] = n
    return out


def flags_from_scalars(scalars: dict[str, float], tau: float) -> list[str]:
    """Human-readable warnings: a fully masked image that reaches τ, no covered image."""
    flags: list[str] = []
    if scalars.get("fully_masked_conf_ge_tau", 0.0) > 0 or scalars.get("fully_masked_conf_max", 0.0) >= tau:
        flags.append(
            f"SIS: the fully masked (all-baseline) image reaches τ = {tau:g} for "
            f"{scalars.get('fully_masked_conf_ge_tau', 0.0):.1%} of the covered images "
            f"(max confidence {scalars.get('fully_masked_conf_max', math.nan):.3f}); the baseline is not "
            "uninformative for this model and those images have an empty SIS"
        )
    if scalars.get("zero_gradient_step_frac", 0.0) > 0.1:
        flags.append(
            f"SIS: the gradient with respect to the mask was exactly 0 at "
            f"{scalars['zero_gradient_step_frac']:.0%} of the Batched-Gradient steps (a piecewise-constant "
            "or thresholded model?): those steps masked pixels in index order, so the SIS says little; "
            "use method='exact' (inputs of ≤ 1024 pixels)"
        )
    if scalars.get("n_covered", 0.0) == 0:
        flags.append(f"SIS: no image reached clean confidence τ = {tau:g}; SIS statistics are undefined")
    return flags
