"""Pixel regions of the ``regions`` metric, and everything it computes from its stored rows without the
model: the border frame, the coarse grid of the SIS heat map, each image's SIS as a mask (vectorised
over images), and the scalars.

Geometry (an image of ``H × W`` pixels, flat index ``i = row·W + col``, as in
:mod:`biasbench.metrics.sis_traces`)
------------------------------------------------------------------------------------------------------

* The **frame** of width ``w`` is every pixel within ``w`` of an edge: ``row < w`` or ``row ≥ H − w``
  or ``col < w`` or ``col ≥ W − w``. Its share of the image is ``1 − (H − 2w)(W − 2w) / (HW)``. For a
  requested share ``s`` the width is the smallest ``w ≥ 1`` whose share is ``≥ s`` (so the frame is
  never empty and never below ``s``); the **centre** is the rest of the image and must keep at least
  one pixel (``2w < min(H, W)``).
* The **grid** of the heat map cuts the image into ``G × G`` cells: pixel ``(row, col)`` lies in cell
  ``(row·G // H, col·G // W)`` (cells differ by at most one pixel row or column when ``G`` does not
  divide the size; every statistic divides by the cell's own area).

SIS location (per covered image with a non-empty SIS at ``τ``; SIS as in :mod:`biasbench.metrics.sis_sets`)
------------------------------------------------------------------------------------------------------

* ``border share`` = ``|SIS ∩ frame| / |SIS|``; its **enrichment** = border share / frame share (1: the
  SIS lies in the frame as often as a uniformly random pixel would; 1/frame share: all of it does; 0:
  none of it does).
* ``density`` of cell ``c`` = ``(|SIS ∩ c| / |SIS|) / (|c| / HW)``: the image's SIS mass in the cell
  over the cell's area share (1 everywhere for an SIS spread uniformly; it averages to 1 over the
  cells weighted by area). The dataset's heat map is its mean over those images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from biasbench.core.errors import InputError

#: the five conditions, their stored (confidence, prediction) columns
CONDITIONS: dict[str, tuple[str, str]] = {
    "full": ("clean_conf", "c0"),
    "frame": ("frame_conf", "frame_pred"),
    "centre": ("centre_conf", "centre_pred"),
    "backselect": ("backselect_conf", "backselect_pred"),
    "random": ("random_conf", "random_pred"),
}
DENSITY_KEY = "sis_density@{row}_{col}"


def frame_share(height: int, width: int, w: int) -> float:
    """The share of an ``height × width`` image's pixels within ``w`` of an edge."""
    inner = max(0, height - 2 * w) * max(0, width - 2 * w)
    return 1.0 - inner / (height * width)


def frame_width(height: int, width: int, share: float) -> int:
    """The smallest width ``w ≥ 1`` whose frame holds at least ``share`` of the pixels, with a non-empty
    centre; :class:`InputError` when no such width exists (``share`` too large for the image)."""
    if not 0.0 < share < 1.0:
        raise InputError(f"the frame share must be in (0, 1), got {share}")
    w_max = (min(height, width) - 1) // 2  # 2w < min(H, W): the centre keeps a pixel
    for w in range(1, w_max + 1):
        if frame_share(height, width, w) >= share - 1e-12:
            return w
    biggest = frame_share(height, width, w_max) if w_max >= 1 else 0.0
    raise InputError(
        f"no border frame of a {height}×{width} image holds {share:.1%} of its pixels and leaves a centre "
        f"(the widest, {w_max} px, holds {biggest:.1%}); choose a smaller frame share"
    )


def frame_mask(height: int, width: int, w: int) -> np.ndarray:
    """Boolean (H·W,) flat mask of the frame of width ``w``."""
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    inside = (rows >= w) & (rows < height - w) & (cols >= w) & (cols < width - w)
    return (~inside).reshape(-1)


def grid_cells(height: int, width: int, grid: int) -> np.ndarray:
    """int64 (H·W,): each pixel's cell ``row_cell·G + col_cell`` on the ``G × G`` grid."""
    if grid < 1 or grid > min(height, width):
        raise InputError(f"the heat-map grid must be 1 … {min(height, width)} cells a side, got {grid}")
    r = np.arange(height) * grid // height
    c = np.arange(width) * grid // width
    return (r[:, None] * grid + c[None, :]).reshape(-1).astype(np.int64)


def sis_masks(orders: np.ndarray, confs: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """``(covered (N,), masks (N, P))`` for stacked traces: covered iff ``conf[0] ≥ τ``; the SIS of a
    covered image is ``order ≥ t*`` with ``t* = max{t : conf[t] ≥ τ}`` (rows of uncovered images are
    all False). The same sets as :func:`biasbench.metrics.sis_sets.sis_mask`, without a loop."""
    orders = np.asarray(orders)
    confs = np.asarray(confs)
    covered = confs[:, 0] >= tau
    reach = confs >= tau
    t_star = confs.shape[1] - 1 - np.argmax(reach[:, ::-1], axis=1)
    masks = (orders >= t_star[:, None]) & covered[:, None]
    return covered, masks


def _stack(column: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v) for v in column])


def location(
    items: pd.DataFrame, tau: float, grid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image at ``τ``: ``covered`` (N,), SIS size ``|SIS|`` (N,), border share (N,; NaN where not
    covered or the SIS is empty) and SIS pixels per grid cell (N, G²). Every row must share one image
    size and frame width (one job)."""
    n = len(items)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0), np.zeros(0), np.zeros((0, grid * grid))
    h, w, fw = (int(items[c].iloc[0]) for c in ("height", "width", "frame_width"))
    if {len(set(items[c])) for c in ("height", "width", "frame_width")} != {1}:
        raise InputError("regions: the rows mix image sizes or frame widths (one job's rows expected)")
    covered, masks = sis_masks(_stack(items["order"]), _stack(items["conf"]), tau)
    size = masks.sum(axis=1).astype(np.float64)
    in_frame = (masks & frame_mask(h, w, fw)[None, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(size > 0, in_frame / size, np.nan)
    cells = np.zeros((n, grid * grid))
    rows, cols = np.nonzero(masks)
    np.add.at(cells, (rows, grid_cells(h, w, grid)[cols]), 1.0)
    return covered, size, share, cells


def _top1(pred: np.ndarray, label: np.ndarray) -> float:
    ok = label >= 0
    return float(np.mean(pred[ok] == label[ok])) if ok.any() else math.nan


def scalars_from_items(items: pd.DataFrame, tau: float, grid: int) -> dict[str, float]:
    """Every ``regions`` scalar from its stored rows (no model), at any ``τ`` and grid.

    * ``tau``, ``q``, ``grid``, ``n_images``, ``n_covered``, ``coverage``; ``frame_width`` (pixels),
      ``frame_share`` (its actual share of the pixels), ``subset_pixels`` (``ceil(q·HW)``).
    * Over every evaluated image, for each condition ``full`` (the clean image), ``frame``, ``centre``,
      ``backselect`` (top-``q`` backward-selection pixels), ``random`` (``q`` seeded random pixels):
      ``<cond>_top1`` (argmax = label, over labeled images), ``<cond>_conf`` (mean softmax probability
      of the clean prediction ``c0``) and, but for ``full``, ``<cond>_agree`` (argmax = ``c0``).
    * Over covered images: ``sis_frac_median`` (SIS size / pixels, as ``sis``'s).
    * Over covered images with a non-empty SIS: ``sis_border_share_mean``, ``border_enrichment`` (its
      ratio to ``frame_share``), ``border_enrichment_median`` (median of the per-image ratios) and the
      heat map ``sis_density@{row}_{col}`` (module docstring).

    A key whose defining set is empty is left out (a scalar is never NaN).
    """
    n = len(items)
    out: dict[str, float] = {"tau": float(tau), "grid": float(grid), "n_images": float(n)}
    if n == 0:
        out.update(coverage=0.0, n_covered=0.0)
        return out
    h, w, fw = (int(items[c].iloc[0]) for c in ("height", "width", "frame_width"))
    share_f = frame_share(h, w, fw)
    out.update(
        q=float(items["subset_q"].iloc[0]),
        frame_width=float(fw),
        frame_share=share_f,
        subset_pixels=float(items["subset_pixels"].iloc[0]),
    )
    label = items["label"].to_numpy(dtype=np.int64)
    c0 = items["c0"].to_numpy(dtype=np.int64)
    for cond, (conf_col, pred_col) in CONDITIONS.items():
        pred = items[pred_col].to_numpy(dtype=np.int64)
        out[f"{cond}_top1"] = _top1(pred, label)
        out[f"{cond}_conf"] = float(items[conf_col].to_numpy(dtype=np.float64).mean())
        if cond != "full":
            out[f"{cond}_agree"] = float(np.mean(pred == c0))
    covered, size, share, cells = location(items, tau, grid)
    out["n_covered"] = float(covered.sum())
    out["coverage"] = float(covered.mean())
    if covered.any():
        out["sis_frac_median"] = float(np.median(size[covered] / (h * w)))
    has = covered & (size > 0)
    if has.any():
        out["sis_border_share_mean"] = float(np.mean(share[has]))
        out["border_enrichment"] = out["sis_border_share_mean"] / share_f
        out["border_enrichment_median"] = float(np.median(share[has] / share_f))
        area = np.bincount(grid_cells(h, w, grid), minlength=grid * grid) / (h * w)
        density = (cells[has] / size[has, None] / area[None, :]).mean(axis=0)
        for cell, v in enumerate(density):
            out[DENSITY_KEY.format(row=cell // grid, col=cell % grid)] = float(v)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def counts_from_items(items: pd.DataFrame, tau: float, grid: int, keys: Sequence[str]) -> dict[str, int]:
    """How many images each scalar in ``keys`` rests on: labeled ones (``_top1``), covered ones (SIS
    size), covered ones with a non-empty SIS (location), else all."""
    n = len(items)
    if n == 0:
        return {k: 0 for k in keys}
    covered, size, _, _ = location(items, tau, grid)
    labeled = int((items["label"].to_numpy(dtype=np.int64) >= 0).sum())
    located = int((covered & (size > 0)).sum())
    out = {}
    for k in keys:
        if k.endswith("_top1"):
            out[k] = labeled
        elif k == "sis_frac_median":
            out[k] = int(covered.sum())
        elif k.startswith(("sis_border", "border_enrichment", "sis_density@")):
            out[k] = located
        else:
            out[k] = n
    return out
