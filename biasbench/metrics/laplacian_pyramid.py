"""Band-limited noise from a Laplacian pyramid, batched in torch, identical to pyrtools.

Subramanian et al. (2023) build a ``pyrtools.pyramids.LaplacianPyramid`` of a white-noise image
(default arguments: height ``'auto'``, filter ``'binom5'`` for both directions, edges ``'reflect1'``)
and keep one band with ``recon_pyr(levels=k)``. This module reproduces exactly that, on any device
and for a whole batch at once. What pyrtools does (read from its source, v1.1):

* **Filter.** ``binom5`` = ``sqrt(2) * [1, 4, 6, 4, 1] / 16`` (sum ``sqrt(2)``), applied separably along
  rows and columns (not normalised again): a 2-D reduce has DC gain 2, a 2-D expand 1/2 (the zeros
  of the up-sampling halve the mass per axis), a reduce followed by an expand 1.
* **Edges.** ``reflect1`` mirrors about the edge pixel without repeating it
  (``x[-1] = x[1]``, ``x[n] = x[n-2]``), for both the reduce and the expand.
* **Reduce** (``corrDn``, step 2, start 0): correlate with the filter (origin at tap 2), keep samples
  0, 2, 4, … — a length-``n`` axis becomes ``ceil(n / 2)``.
* **Expand** (``upConv``, step 2, output length ``n``): put the input on the even samples of a
  length-``n`` zero signal, then correlate with the filter under ``reflect1`` — except for one
  folded tap that pyrtools' C code drops when ``n = 5`` (ported as is, see :func:`expand_matrix`).
* **Height.** ``'auto'`` = ``max_pyr_height + 1`` where ``max_pyr_height`` counts how often
  ``min(H, W)`` can be halved (integer division) while it is still ≥ 5 (the filter length):
  224 px → 7 levels (224, 112, 56, 28, 14, 7, 4); 64 px → 5 levels (64, 32, 16, 8, 4).
* **Bands.** Level ``k < top`` holds ``G_k − expand(reduce(G_k))`` with ``G_k`` the k-times reduced
  image; the top level holds ``G_top`` itself (the low-pass residual).
* **recon_pyr(levels=k)** starts from zeros at the top, walks down expanding level by level, and
  adds level ``k``'s coefficients when it passes it: the result is level ``k`` expanded ``k`` times
  back to full size. (Expanding the zero start image is zero, so a single level reconstructs as
  ``Uc_k · L_k · Uc_kᵀ``.)

Every step is linear and separable, so each axis is a fixed matrix: ``Dc_k`` (k reductions),
``Q_k = U_k D_k`` (one reduce + expand at level k) and ``Uc_k`` (k expansions). The band-``k``
reconstruction of a batch ``w`` (…, H, W) is

    G = Dc_kʳ · w · Dc_kᶜᵀ;   L = G − Q_kʳ · G · Q_kᶜᵀ (k < top) or G (k = top);   band = Uc_kʳ · L · Uc_kᶜᵀ

— a handful of batched matmuls (the matrices are built once per size in float64 and cast to the
batch's dtype and device). The tests compare it with pyrtools on 224 px and demo-world sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from biasbench.core.errors import InputError

#: pyrtools' ``binom5`` (``named_filter('binom5')``): sqrt(2) · [1, 4, 6, 4, 1] / 16.
BINOM5 = np.sqrt(2.0) * np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
_ORIGIN = 2  # floor(len(filter) / 2)


def _reflect1(p: int, n: int) -> int:
    """Index ``p`` mirrored about the edge samples of a length-``n`` axis (pyrtools ``reflect1``)."""
    if p < 0:
        p = -p
    if p > n - 1:
        p = 2 * (n - 1) - p
    if not 0 <= p < n:
        raise InputError(f"filter overhang too large for an axis of length {n}")
    return p


def reduce_matrix(n: int, filt: np.ndarray = BINOM5) -> np.ndarray:
    """pyrtools ``corrDn(step=2, edge_type='reflect1')`` along one axis as a (ceil(n/2), n) matrix."""
    m = (n + 1) // 2
    d = np.zeros((m, n))
    for i in range(m):
        for j, fj in enumerate(filt):
            d[i, _reflect1(2 * i + j - _ORIGIN, n)] += fj
    return d


def _reflect1_expand_filter(filt: np.ndarray, pos: int) -> np.ndarray:
    """The filter pyrtools' C ``reflect1`` hands ``internal_expand`` at edge position ``pos`` (1-D).

    A line-by-line port of the ``EXPAND`` branch of ``reflect1`` in ``pyrtools/pyramids/c/edges.c``
    for a filter of one column: taps that fall off the edge are folded back (through ``abs`` of
    negative indices), and a second, mirrored copy is added unless the overhang is the filter's
    half-width.
    """
    size = len(filt)
    res = np.zeros(size)
    base = size - 1 if pos > 0 else 0
    over = abs(pos - 1 if pos > 0 else (pos + 1 if pos < 0 else 0))
    mid = size // 2 if pos < 0 else (size - 1) // 2
    starts = [base - over]
    if over != mid and pos != 0:
        starts.append(base - 2 * mid + over)
    for yf in starts:
        yr = base
        while yf > base - size:
            res[abs(yr)] += filt[abs(yf)]
            yf -= 1
            yr -= 1
    return res


def expand_matrix(n_out: int, n_in: int, filt: np.ndarray = BINOM5) -> np.ndarray:
    """pyrtools ``upConv(step=2, edge_type='reflect1', stop=n_out)`` along one axis, (n_out, n_in).

    A port of the 1-D path through ``internal_expand`` (``convolve.c``): top edge, centre, bottom
    edge. For ``n_out >= 6`` this equals "zero-upsample to ``n_out`` samples, pad with ``reflect1``,
    correlate"; at ``n_out = 5`` (where the top and bottom edge cases overlap) pyrtools skips one
    folded tap, and so do we — the test oracle is pyrtools itself.
    """
    if n_in != (n_out + 1) // 2:
        raise InputError(f"cannot expand {n_in} samples to {n_out}")
    size = len(filt)
    if n_out < size:
        raise InputError(f"pyrtools cannot expand to {n_out} < {size} samples")
    u = np.zeros((n_out, n_in))
    y, y_stop, col = -_ORIGIN, n_out - _ORIGIN, 0
    ctr_stop = min(n_out - size, y_stop)
    while y < 1:  # top edge
        u[0:size, col] += _reflect1_expand_filter(filt, y - 1)
        col, y = col + 1, y + 2
    while y < ctr_stop:  # centre
        u[y : y + size, col] += filt
        col, y = col + 1, y + 2
    while y < y_stop:  # bottom edge
        u[ctr_stop : ctr_stop + size, col] += _reflect1_expand_filter(filt, y - ctr_stop + 1)
        col, y = col + 1, y + 2
    return u


def max_pyr_height(h: int, w: int, filter_len: int = 5) -> int:
    """pyrtools ``max_pyr_height((h, w), (filter_len, 1))``: how often min(h, w) halves while ≥ filter_len."""
    height = 0
    while min(h, w) >= filter_len:
        height += 1
        h, w = h // 2, w // 2
    return height


def pyramid_levels(h: int, w: int) -> int:
    """Number of levels of ``LaplacianPyramid(image, height='auto')`` for an (h, w) image."""
    return max_pyr_height(h, w) + 1


@dataclass(frozen=True)
class _AxisOps:
    dc: tuple[np.ndarray, ...]  # dc[k]: (s_k, n) — k reductions
    q: tuple[np.ndarray | None, ...]  # q[k]: (s_k, s_k) — reduce then expand at level k (None at the top)
    uc: tuple[np.ndarray, ...]  # uc[k]: (n, s_k) — k expansions


@lru_cache(maxsize=32)
def _axis_ops(n: int, levels: int) -> _AxisOps:
    sizes = [n]
    for _ in range(levels - 1):
        sizes.append((sizes[-1] + 1) // 2)
    downs = [reduce_matrix(sizes[k]) for k in range(levels - 1)]
    ups = [expand_matrix(sizes[k], sizes[k + 1]) for k in range(levels - 1)]
    dc, uc = [np.eye(n)], [np.eye(n)]
    for k in range(1, levels):
        dc.append(downs[k - 1] @ dc[-1])
        uc.append(uc[-1] @ ups[k - 1])
    q: list[np.ndarray | None] = [ups[k] @ downs[k] for k in range(levels - 1)] + [None]
    return _AxisOps(tuple(dc), tuple(q), tuple(uc))


class LaplacianBands:
    """Single-band reconstructions of a pyrtools Laplacian pyramid for (…, H, W) batches.

    ``levels`` defaults to pyrtools' ``'auto'`` height. ``band(w, k)`` equals
    ``LaplacianPyramid(w_i).recon_pyr(levels=k)`` for every image ``w_i`` of the batch (k = 0 is the
    finest level, ``levels − 1`` the low-pass residual).
    """

    def __init__(self, h: int, w: int, levels: int | None = None) -> None:
        self.h, self.w = int(h), int(w)
        self.levels = pyramid_levels(h, w) if levels is None else int(levels)
        if not 1 <= self.levels <= pyramid_levels(h, w):
            raise InputError(f"a {h}x{w} image has at most {pyramid_levels(h, w)} pyramid levels")
        self._rows = _axis_ops(self.h, self.levels)
        self._cols = _axis_ops(self.w, self.levels)
        self._cache: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor | None, ...]] = {}

    def _mats(self, k: int, like: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        key = (k, like.dtype, like.device)
        if key not in self._cache:

            def t(a: np.ndarray | None) -> torch.Tensor | None:
                return None if a is None else torch.as_tensor(a, dtype=like.dtype, device=like.device)

            r, c = self._rows, self._cols
            self._cache[key] = (
                t(r.dc[k]), t(c.dc[k].T.copy()), t(r.q[k]), t(None if c.q[k] is None else c.q[k].T.copy()),
                t(r.uc[k]), t(c.uc[k].T.copy()),
            )  # fmt: skip
        return self._cache[key]

    def expansion_matrices(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, s_k) and (W, s_k'): level ``k`` expanded ``k`` times, per axis. Every ``recon_pyr(levels=k)``
        lies in the span of ``rows · C · colsᵀ`` over (s_k, s_k') matrices ``C``."""
        return self._rows.uc[k], self._cols.uc[k]

    def band(self, w: torch.Tensor, k: int) -> torch.Tensor:
        """``recon_pyr(levels=k)`` of each (H, W) image in ``w`` (…, H, W)."""
        if w.shape[-2:] != (self.h, self.w):
            raise InputError(f"expected (..., {self.h}, {self.w}), got {tuple(w.shape)}")
        if not 0 <= k < self.levels:
            raise InputError(f"level {k} out of range 0..{self.levels - 1}")
        dr, dct, qr, qct, ur, uct = self._mats(k, w)
        g = w if k == 0 else dr @ w @ dct
        lap = g if qr is None else g - qr @ g @ qct
        return lap if k == 0 else ur @ lap @ uct


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last two dimensions, keeping them (for broadcasting)."""
    return x.square().mean(dim=(-2, -1), keepdim=True).sqrt()


def equalised_band_noise(w: torch.Tensor, level: int, bands: LaplacianBands) -> torch.Tensor:
    """Band ``level`` of white noise ``w``, rescaled per image to the RMS of its level-0 band.

    Subramanian et al.: ``recon * rmspower(recon_pyr(levels=0)) / rmspower(recon)``.
    """
    band = bands.band(w, level)
    if level == 0:
        return band
    ref = bands.band(w, 0)
    return band * (rms(ref) / rms(band).clamp_min(torch.finfo(band.dtype).tiny))


def band_centre_frequency(f: int, size: int, levels: int) -> float:
    """Nominal centre frequency (cycles/image) of band ``f`` (f = 0 coarsest … levels−1 finest).

    The finest band is centred on ``size / 2`` cycles/image and each coarser band an octave lower:
    ``(size / 2) · 2^(f − (levels − 1))`` — 1.75 · 2^f at 224 px with 7 levels (Subramanian et al.).
    """
    return (size / 2.0) * math.pow(2.0, f - (levels - 1))
